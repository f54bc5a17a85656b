//! The e2e tests' dockerd: the lab's ([`netd_lab::dockerd`]) with no iptables rules of
//! its own, no userland proxy and live restore on, the tests' image imported, and every
//! container removed before it stops. Failures fail the test.
use std::{path::PathBuf, process::Output};

use netd_lab::dockerd::{self, build_image, Image};
use netd_tests::{tester_bin, Lab};

pub const IMAGE: &str = "local/busybox";

/// dockerd's flags beyond the lab's: netd's plugin does the networking.
const ARGS: &[&str] = &[
    "--iptables=false",
    "--ip-masq=false",
    "--userland-proxy=false",
    "--live-restore",
];

pub struct Dockerd(dockerd::Dockerd);

impl Dockerd {
    /// Starts dockerd in the lab's host namespace and imports [`IMAGE`]: busybox,
    /// netd-tester and /www/index.html.
    pub fn start(lab: &Lab) -> Dockerd {
        let dk = dockerd::Dockerd::start(lab, ARGS).unwrap_or_else(|e| panic!("{e}"));
        let tester = tester_bin();
        let image = Image {
            bins: &[("netd-tester", &tester)],
            files: &[("www/index.html", "hello from docker\n")],
        };
        let tar = build_image(&lab.dir, &image).unwrap_or_else(|e| panic!("{e}"));
        dk.import(&tar, IMAGE).unwrap_or_else(|e| panic!("{e}"));
        Dockerd(dk)
    }

    /// docker-compose (Debian's, 1.29) in `dir` against this daemon; its output
    /// whatever the exit status.
    pub fn compose(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        std::process::Command::new("docker-compose")
            .current_dir(dir)
            .env("DOCKER_HOST", self.0.host_address())
            .args(args)
            .output()
            .expect("running docker-compose")
    }

    /// The CLI; its output whatever the exit status.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.0.output(args).expect("running docker")
    }

    /// Runs the CLI and fails the test if it fails; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        match self.0.docker(args) {
            Ok(out) => out.trim().to_string(),
            Err(e) => panic!("{e}"),
        }
    }

    /// Stops dockerd (its containers keep running) and starts it again.
    pub fn restart(&mut self) {
        self.0.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The cgroup directories dockerd made for itself and its containers.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.0.cgroup_dirs()
    }
}

impl Drop for Dockerd {
    /// Removes every container; then the lab's dockerd stops and removes the rest.
    fn drop(&mut self) {
        self.0.remove_containers();
    }
}
