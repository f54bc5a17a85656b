//! BPF_PROG_TEST_RUN: runs a loaded program over a frame without attaching it anywhere.
//! Only the packet fixtures (netd/tests/packets.rs) use this; it lives here because it
//! needs the loaded object.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{anyhow, Context};

use super::Datapath;

impl Datapath {
    /// Runs program `prog` once over `packet` (an Ethernet frame) with BPF_PROG_TEST_RUN
    /// and returns its verdict and the frame as the program left it. Nothing is attached
    /// anywhere: this is how the packet fixtures exercise the datapath.
    pub fn test_run(&self, prog: &str, packet: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        self.test_run_on(prog, packet, None)
    }

    /// `test_run` as if the frame arrived on interface `ifindex` (which must exist in
    /// the calling thread's namespace).
    pub fn test_run_on(
        &self,
        prog: &str,
        packet: &[u8],
        ifindex: Option<u32>,
    ) -> anyhow::Result<(u32, Vec<u8>)> {
        let p = self
            .ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("program {prog} missing"))?;
        let fd = p.fd()?.as_fd().as_raw_fd();
        // The kernel may grow the frame (it never does here) up to this size.
        let mut out = vec![0u8; packet.len() + 256];
        // The BPF_PROG_TEST_RUN member of union bpf_attr.
        #[repr(C)]
        #[derive(Default)]
        struct TestRunAttr {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
            ctx_size_in: u32,
            ctx_size_out: u32,
            ctx_in: u64,
            ctx_out: u64,
            flags: u32,
            cpu: u32,
            batch_size: u32,
            _pad: u32,
        }
        // A struct __sk_buff (192 bytes) with only `ifindex` (offset 40) set.
        let mut ctx = [0u8; 192];
        let mut attr = TestRunAttr {
            prog_fd: fd as u32,
            data_size_in: packet.len() as u32,
            data_size_out: out.len() as u32,
            data_in: packet.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        if let Some(i) = ifindex {
            ctx[40..44].copy_from_slice(&i.to_ne_bytes());
            attr.ctx_in = ctx.as_ptr() as u64;
            attr.ctx_size_in = ctx.len() as u32;
        }
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        // SAFETY: attr points at valid input and output buffers whose sizes it states;
        // the kernel writes only within them and into attr.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context("BPF_PROG_TEST_RUN");
        }
        out.truncate(attr.data_size_out as usize);
        Ok((attr.retval, out))
    }
}
