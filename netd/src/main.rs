use netd::cli::{self, Command};

fn main() {
    // A container's process on its way in (see `process::enter`): nothing else of netd.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == netd::process::ENTER_ARG)
    {
        netd::process::enter_main();
    }
    let cli = match cli::parse_args() {
        Ok(c) => c,
        Err(code) => std::process::exit(code),
    };
    let code = match cli.command {
        Command::Daemon(args) => daemon(*args),
        Command::HoldTerminal {
            run_dir,
            id,
            pid,
            start,
        } => match netd::terminal::hold(&run_dir, &id, pid, start) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        _ => {
            // A client piped into head, grep -q or less must end quietly when the reader
            // goes away, as ip and docker do: the default action of SIGPIPE (Rust
            // ignores it, and println! then panics on EPIPE).
            // SAFETY: resetting a signal's disposition before any thread exists.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("Error: starting the runtime: {e}");
                    std::process::exit(1);
                }
            };
            match rt.block_on(cli::run(cli)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("Error: {}", cli::one_line(&e));
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

/// `netd daemon`: the config file, then the logger, the namespace and the runtime.
fn daemon(cli_args: netd::daemon::DaemonArgs) -> i32 {
    let fail = |e: anyhow::Error| {
        eprintln!("Error: {}", cli::one_line(&e));
        1
    };
    let (args, config) = match netd::daemon::config_file::apply(cli_args.clone()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.validate {
        return match args.check_all() {
            Ok(()) => {
                println!("configuration OK");
                0
            }
            Err(e) => fail(e),
        };
    }
    // Two malloc arenas instead of one per thread: the daemon's work is small and
    // bursty, and per-thread arenas keep freed memory around.
    // SAFETY: a glibc tuning call made before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    netd::logging::init(args.log_level);
    // The namespace is entered before the runtime starts any thread: namespaces are per
    // thread, and every netlink socket, interface name and sysctl the daemon touches
    // must be the ones of that namespace.
    let reload = netd::daemon::Reloader::new(config, cli_args);
    let result = netd::daemon::enter_netns(&args).and_then(|()| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(async {
                reload.spawn()?;
                netd::server::serve(args).await
            })
    });
    match result {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
