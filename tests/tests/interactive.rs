//! End-to-end: interactive containers and execs. `netd run -it` gives the command a
//! pseudo-terminal attached to the caller's (here a terminal the test holds), `-i`
//! attaches stdin, the detach keys leave the container running for `netd attach`;
//! `docker exec` (the stock CLI) and docker-py's exec run against netd's socket. Run
//! as root (cargo xtask test does).
use std::{
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use netd_tests::{docker_py, json, ok, Lab};

/// A command on a terminal of the test's own: what it prints, and keys to type.
struct Terminal {
    child: Child,
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Starts `cmd` (its args) on a new terminal of `rows` x `cols`.
    fn spawn(program: &std::path::Path, args: &[&str], envs: &[(&str, String)]) -> Terminal {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors; no name or termios is asked for.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty");
        // SAFETY: openpty just returned these two open descriptors; they are ours.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut c = Command::new(program);
        c.args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        for (k, v) in envs {
            c.env(k, v);
        }
        // SAFETY: setsid and TIOCSCTTY between fork and exec, on the child's own fd 0.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = c.spawn().expect("starting the command on a terminal");
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut rd, out) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            master,
            seen,
        }
    }

    fn netd(lab: &Lab, args: &[&str]) -> Terminal {
        let sock = lab.socket().display().to_string();
        Terminal::spawn(&netd_tests::netd_bin(), args, &[("NETD_HOST", sock)])
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal has shown `want` (after what it showed already).
    fn expect(&self, want: &str) {
        let t = Instant::now();
        while !self.text().contains(want) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the terminal never showed {want:?}; it shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn forget(&self) {
        self.seen.lock().unwrap().clear();
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// The command's exit status (it must end within 10 s).
    fn wait(&mut self) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "still running; the terminal shows:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.master.as_raw_fd();
    }
}

fn status(lab: &Lab, name: &str) -> String {
    ok(
        &lab.docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("name=^{name}$"),
            "--format",
            "{{.Status}}",
        ]),
        "docker ps",
    )
    .trim()
    .to_string()
}

#[test]
fn run_it_gives_the_command_this_terminal_and_the_detach_keys_leave_it_running() {
    let lab = Lab::new();
    // The tutorials' first step, verbatim but for the image.
    let mut t = Terminal::netd(&lab, &["run", "-it", "--name", "alpine01", "--", "sh"]);
    t.expect("# ");
    t.type_keys("tty; stty size; echo hello-$((6*7))\r");
    t.expect("hello-42");
    let shown = t.text();
    assert!(
        shown.contains("/dev/pts/"),
        "a terminal of its own:\n{shown}"
    );
    assert!(
        shown.contains("40 100"),
        "the caller's window size:\n{shown}"
    );
    t.type_keys("exit 3\r");
    assert_eq!(t.wait(), 3, "the command's exit code is run's");
    assert!(
        status(&lab, "alpine01").starts_with("Exited (3)"),
        "{}",
        status(&lab, "alpine01")
    );
    let c = lab.inspect("alpine01");
    assert_eq!(c["Config"]["Tty"], true);
    assert_eq!(c["Config"]["OpenStdin"], true);
    assert_eq!(c["Config"]["StdinOnce"], true);

    // ctrl-p ctrl-q: run ends, the container goes on; attach comes back to it.
    let mut t = Terminal::netd(&lab, &["run", "-it", "--name", "bg", "--", "sh"]);
    t.expect("# ");
    t.type_keys("\x10\x11");
    assert_eq!(t.wait(), 0);
    assert!(
        status(&lab, "bg").starts_with("Up"),
        "{}",
        status(&lab, "bg")
    );
    let mut t = Terminal::netd(&lab, &["attach", "bg"]);
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys("echo back-$((1+1))\r");
    t.expect("back-2");
    // Other detach keys, Docker's notation.
    t.forget();
    t.type_keys("exit 5\r");
    assert_eq!(t.wait(), 5);
    // -dit: in the background, attached later; keys of its own.
    lab.netd_ok(&["run", "-dit", "--name", "later", "--", "sh"]);
    let mut t = Terminal::netd(&lab, &["attach", "--detach-keys", "ctrl-a,x", "later"]);
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys("echo $((40+2))\r");
    t.expect("42");
    t.type_keys("\x01x");
    assert_eq!(t.wait(), 0);
    assert!(status(&lab, "later").starts_with("Up"));
    // The stock docker CLI attaches too, and takes the exit code.
    let sock = format!("unix://{}", lab.socket().display());
    let docker = std::path::PathBuf::from("docker");
    let mut t = Terminal::spawn(&docker, &["-H", &sock, "attach", "later"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    t.type_keys("echo docker-$((3*3))\r");
    t.expect("docker-9");
    t.type_keys("exit 6\r");
    assert_eq!(t.wait(), 6);
    lab.netd_ok(&["rm", "-f", "later", "alpine01"]);
}

#[test]
fn run_i_attaches_stdin_and_bad_flags_are_one_line() {
    let lab = Lab::new();
    let run = |input: &str, args: &[&str]| {
        let mut c = Command::new(netd_tests::netd_bin())
            .env("NETD_HOST", lab.socket())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // `echo exit | netd run -i ... -- sh`, the tutorials' other first step.
    let (code, _, err) = run("exit\n", &["run", "-i", "--name", "piped", "--", "sh"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(
        "echo out-$((1+1)); echo err >&2; exit 7\n",
        &["run", "-i", "--rm", "--", "sh"],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out-2\n", "err\n"));
    // The process's stdin ends with the caller's.
    let (code, out, _) = run("one\ntwo\n", &["run", "-i", "--rm", "--", "cat"]);
    assert_eq!((code, out.as_str()), (0, "one\ntwo\n"));
    assert!(
        lab.netd_ok(&["ps", "-aq"]).lines().count() == 1,
        "--rm removed them"
    );
    for (args, want) in [
        (
            vec!["run", "-it", "--detach-keys", "ctrl-1", "--", "sh"],
            "invalid --detach-keys \"ctrl-1\"",
        ),
        (
            vec!["run", "-it", "--name", "nocmd"],
            "-i and -t need a command",
        ),
        (
            vec!["attach", "piped"],
            "You cannot attach to a stopped container",
        ),
    ] {
        let (code, _, err) = run("", &args);
        assert!(code != 0 && err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    lab.netd_ok(&["run", "-d", "--name", "plain", "--", "sleep", "60"]);
    let (_, _, err) = run("", &["attach", "plain"]);
    assert!(err.contains("was not created with -i or -t"), "{err}");
    // `netd exec` takes Docker's -i, -t, -e, -w, -u.
    let (code, out, err) = run(
        "typed\n",
        &[
            "exec",
            "-i",
            "-t",
            "-e",
            "A=b",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "plain",
            "sh",
            "-c",
            "read x; echo $x $A $(pwd) $(id -un)",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "typed b /tmp nobody\n"), "{err}");
}

#[test]
fn docker_exec_and_docker_py_exec_against_netds_socket() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--hostname",
        "webhost",
        "--",
        "sleep",
        "600",
    ]);
    // Output attached, each stream to its own, the exit code from exec inspect.
    let o = lab.docker(&["exec", "web", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // The container's namespaces: its interfaces, its hostname; -e, -w.
    let o = lab.docker(&[
        "exec",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "web",
        "sh",
        "-c",
        "echo $FOO; pwd; hostname; cat /proc/net/dev | grep -c eth0",
    ]);
    assert_eq!(ok(&o, "docker exec -e -w"), "bar\n/tmp\nwebhost\n1\n");
    // -i: stdin to the command, closed when the caller's ends.
    let mut c = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", lab.socket().display()))
        .args(["exec", "-i", "web", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "piped\n");
    // -d: at once; the command goes on, and inspect lists it while it runs.
    let mark = lab.dir.join("exec-d");
    let script = format!("sleep 1; touch {}", mark.display());
    let t = Instant::now();
    ok(
        &lab.docker(&["exec", "-d", "web", "sh", "-c", &script]),
        "docker exec -d",
    );
    assert!(t.elapsed() < Duration::from_millis(900));
    let ids = lab.inspect("web")["ExecIDs"].clone();
    assert_eq!(ids.as_array().map(Vec::len), Some(1), "{ids}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the detached exec never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    // -it: a terminal of its own (the docker CLI wants one of ours).
    let sock = format!("unix://{}", lab.socket().display());
    let docker = std::path::PathBuf::from("docker");
    let mut t = Terminal::spawn(&docker, &["-H", &sock, "exec", "-it", "web", "sh"], &[]);
    t.expect("# ");
    t.type_keys("tty; exit 4\r");
    t.expect("/dev/pts/");
    assert_eq!(t.wait(), 4);
    // docker-py: exec_run, attached and detached, and the low-level calls.
    let py = docker_py(
        &lab,
        "w = c.containers.get('web')\n\
         r = w.exec_run(['sh', '-c', 'echo hi; exit 2'])\n\
         d = w.exec_run(['true'], detach=True)\n\
         e = c.api.exec_create('web', ['sh', '-c', 'exit 9'])\n\
         c.api.exec_start(e['Id'])\n\
         i = c.api.exec_inspect(e['Id'])\n\
         print(json.dumps([r.exit_code, r.output.decode(), d.exit_code, i['ExitCode'], i['Running'], i['ProcessConfig']['entrypoint']]))",
    );
    let v = json(py.trim());
    assert_eq!(v[0], 2, "{v}");
    assert_eq!(v[1], "hi\n", "{v}");
    // Detached: the exit code is null while it runs, 0 once `true` is done.
    assert!(v[2].is_null() || v[2] == 0, "{v}");
    assert_eq!(
        (&v[3], &v[4], &v[5]),
        (
            &serde_json::json!(9),
            &serde_json::json!(false),
            &serde_json::json!("sh")
        ),
        "{v}"
    );
    // docker-py's wait, and the docker CLI's.
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "w",
        "--",
        "sh",
        "-c",
        "sleep 0.3; exit 4",
    ]);
    let py = docker_py(&lab, "print(c.containers.get('w').wait()['StatusCode'])");
    assert_eq!(py.trim(), "4");
    assert_eq!(ok(&lab.docker(&["wait", "w"]), "docker wait").trim(), "4");
    // A command that does not exist: why on stderr, Docker's exit code.
    let o = lab.docker(&["exec", "web", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No such file"),
        "{o:?}"
    );
    // Docker's refusals.
    lab.netd_ok(&["stop", "-t", "0", "web"]);
    let o = lab.docker(&["exec", "web", "true"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not running"),
        "{o:?}"
    );
    let o = lab.docker(&["exec", "nosuch", "true"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No such container: nosuch"),
        "{o:?}"
    );
}

/// Docker's networking tutorials (standalone containers on the default bridge, then a
/// user-defined bridge), their commands as written but for the image (`--` and a host
/// shell instead of `alpine ash`).
#[test]
fn the_networking_tutorials_run_verbatim() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "ls"]);
    for n in ["alpine1", "alpine2"] {
        lab.netd_ok(&["run", "-dit", "--name", n, "--", "sh"]);
    }
    let listed = lab.netd_ok(&["container", "ls"]);
    assert!(
        listed.contains("alpine1") && listed.contains("alpine2"),
        "{listed}"
    );
    let bridge = json(&lab.netd_ok(&["network", "inspect", "bridge"]));
    assert_eq!(bridge[0]["Containers"].as_object().unwrap().len(), 2);
    let ip2 = lab.inspect("alpine2")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let mut t = Terminal::netd(&lab, &["attach", "alpine1"]);
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys(&format!("ip addr show eth0; ping -c 2 {ip2}\r"));
    t.expect("2 packets transmitted, 2 received");
    t.type_keys("\x10\x11");
    assert_eq!(t.wait(), 0);
    lab.netd_ok(&["container", "stop", "alpine1", "alpine2"]);
    lab.netd_ok(&["container", "rm", "alpine1", "alpine2"]);

    lab.netd_ok(&["network", "create", "--driver", "bridge", "alpine-net"]);
    lab.netd_ok(&[
        "run",
        "-dit",
        "--name",
        "alpine1",
        "--network",
        "alpine-net",
        "--",
        "sh",
    ]);
    lab.netd_ok(&[
        "run",
        "-dit",
        "--name",
        "alpine2",
        "--network",
        "alpine-net",
        "--",
        "sh",
    ]);
    lab.netd_ok(&["run", "-dit", "--name", "alpine3", "--", "sh"]);
    lab.netd_ok(&[
        "run",
        "-dit",
        "--name",
        "alpine4",
        "--network",
        "alpine-net",
        "--",
        "sh",
    ]);
    lab.netd_ok(&["network", "connect", "bridge", "alpine4"]);
    let ip3 = lab.inspect("alpine3")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    // Names on the user-defined network; alpine3 is on the default bridge only.
    let mut t = Terminal::netd(&lab, &["container", "attach", "alpine1"]);
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys("ping -c 2 alpine2 && ping -c 2 alpine4 && echo names-ok\r");
    t.expect("names-ok");
    t.type_keys("ping -c 1 -W 1 alpine3 || echo no-alpine3\r");
    t.expect("no-alpine3");
    t.type_keys("\x10\x11");
    assert_eq!(t.wait(), 0);
    // alpine4 is on both networks: it reaches alpine1 by name and alpine3 by address.
    let mut t = Terminal::netd(&lab, &["container", "attach", "alpine4"]);
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys(&format!(
        "ping -c 2 alpine1 && ping -c 2 {ip3} && echo both-ok\r"
    ));
    t.expect("both-ok");
    t.type_keys("\x10\x11");
    assert_eq!(t.wait(), 0);
    lab.netd_ok(&[
        "container",
        "stop",
        "alpine1",
        "alpine2",
        "alpine3",
        "alpine4",
    ]);
    lab.netd_ok(&[
        "container",
        "rm",
        "alpine1",
        "alpine2",
        "alpine3",
        "alpine4",
    ]);
    lab.netd_ok(&["network", "rm", "alpine-net"]);
}

/// A `-t` container's terminal outlives the agent: the shell is not hung up when the
/// agent stops (SIGTERM, or kill -9), and the next agent attaches to the same shell.
#[test]
fn a_terminal_survives_restarts_of_the_agent() {
    let mut lab = Lab::new();
    lab.netd_ok(&["run", "-dit", "--name", "t", "--", "sh"]);
    let mut t = Terminal::netd(&lab, &["attach", "t"]);
    std::thread::sleep(Duration::from_millis(300));
    t.type_keys("echo pid=$$.\r");
    t.expect(".\r\n");
    let pid = |text: &str| -> String {
        text.split("pid=")
            .filter_map(|s| s.split('.').next())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .last()
            .unwrap_or_default()
            .to_string()
    };
    let first = pid(&t.text());
    assert!(!first.is_empty(), "{}", t.text());
    t.type_keys("\x10\x11");
    assert_eq!(t.wait(), 0);
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        lab.stop_daemon(signal);
        // Typed while no agent runs: the shell reads it when one is back.
        lab.start_daemon().expect("restart");
        assert!(status(&lab, "t").starts_with("Up"), "{}", status(&lab, "t"));
        let mut t = Terminal::netd(&lab, &["attach", "t"]);
        std::thread::sleep(Duration::from_millis(300));
        t.type_keys("echo pid=$$.\r");
        t.expect(".\r\n");
        assert_eq!(pid(&t.text()), first, "another shell:\n{}", t.text());
        t.type_keys("\x10\x11");
        assert_eq!(t.wait(), 0);
    }
    // The stock docker CLI attaches to it as well. (The shell's exit code went to the
    // first agent, its parent: an agent that adopted a process cannot learn it.)
    let sock = format!("unix://{}", lab.socket().display());
    let mut t = Terminal::spawn(
        &std::path::PathBuf::from("docker"),
        &["-H", &sock, "attach", "t"],
        &[],
    );
    std::thread::sleep(Duration::from_millis(500));
    t.type_keys("echo docker-$((2*3))\r");
    t.expect("docker-6");
    t.type_keys("exit 4\r");
    t.wait();
    assert!(
        status(&lab, "t").starts_with("Exited"),
        "{}",
        status(&lab, "t")
    );
    // Its holder went with it.
    let t0 = Instant::now();
    while lab
        .dir
        .join("run/terminals")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "the holder stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
}
