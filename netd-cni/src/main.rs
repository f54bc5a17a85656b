//! netd-cni: a CNI 1.1 plugin (spec versions 0.3.0 through 1.1.0) that attaches a
//! container runtime's network namespace to a netd network. It is a thin client of the
//! daemon's endpoint API: the daemon owns IPAM, the eBPF maps and the pinned programs.
//!
//! Network configuration:
//! `{"cniVersion":"1.1.0","name":"NAME","type":"netd-cni","network":"NETD_NETWORK",
//!   "socket":"/run/netd/netd.sock","capabilities":{"portMappings":true,"aliases":true,
//!   "ips":true,"mac":true}}` (`network` defaults to `name`, `socket` to the daemon's
//! default). A result goes to stdout; an error is CNI's error JSON on stdout with a
//! non-zero exit.
mod conf;
mod daemon;
mod error;
mod result;
mod verbs;
mod version;

use std::io::Read;

use conf::NetConf;
use error::{code, CniError};
use verbs::{Env, Verb};

/// Runs the verb; Some(output) for the verbs that print a result.
fn run() -> Result<Option<String>, CniError> {
    let verb = match std::env::var("CNI_COMMAND") {
        Ok(v) => Verb::parse(&v)?,
        Err(_) => {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "missing environment variable",
                "CNI_COMMAND is not set",
            ))
        }
    };
    let mut stdin = Vec::new();
    std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            "cannot read the network configuration",
            e.to_string(),
        )
    })?;
    if verb == Verb::Version {
        return Ok(Some(verbs::version(&stdin)));
    }
    let conf = NetConf::parse(&stdin)?;
    let env = Env::from_process();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO_FAILURE, "starting the runtime", e.to_string()))?;
    rt.block_on(async {
        match verb {
            Verb::Add => verbs::add(&conf, &env).await.map(Some),
            Verb::Del => verbs::del(&conf, &env).await.map(|()| None),
            Verb::Check => verbs::check(&conf, &env).await.map(|()| None),
            Verb::Status => verbs::status(&conf).await.map(|()| None),
            Verb::Gc => verbs::gc(&conf).await.map(|()| None),
            Verb::Version => Ok(Some(verbs::version(&stdin))),
        }
    })
    .map_err(|e| e.in_version(&conf.cni_version))
}

fn main() {
    let code = match run() {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            // The runtime reads the error from stdout; stderr is for people.
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
            eprintln!("netd-cni: {e}");
            1
        }
    };
    std::process::exit(code);
}
