use netd::cli::{self, Command};

fn main() {
    let cli = match cli::parse_args() {
        Ok(c) => c,
        Err(code) => std::process::exit(code),
    };
    let code = match cli.command {
        Command::Daemon(args) => {
            // Two malloc arenas instead of one per thread: the daemon's work is small
            // and bursty, and per-thread arenas keep freed memory around.
            // SAFETY: a glibc tuning call made before any thread exists.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .init();
            // The namespace is entered before the runtime starts any thread: namespaces
            // are per thread, and every netlink socket, interface name and sysctl the
            // daemon touches must be the ones of that namespace.
            let result = netd::daemon::enter_netns(&args).and_then(|()| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?
                    .block_on(netd::server::serve(args))
            });
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("Error: {}", cli::one_line(&e));
                    1
                }
            }
        }
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
