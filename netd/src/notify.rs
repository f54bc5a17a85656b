//! systemd's readiness protocol for `Type=notify` units: READY=1 once the API socket
//! is served, RELOADING=1 while a SIGHUP is handled, STOPPING=1 at a stop. Outside
//! systemd (no NOTIFY_SOCKET) each call does nothing.
use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("telling systemd ({:?}): {e}", states.first());
    }
}

pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving the API")]);
}

pub fn reloading() {
    // systemd 253+ matches RELOADING=1 with the time it was sent.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
