//! The map batch syscalls (BPF_MAP_*_BATCH: a few syscalls per thousands of entries
//! instead of one or two per entry), which aya does not wrap: the agent walks and
//! prunes conntrack with them, the bench fills a table to capacity.
extern crate std;

pub const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
pub const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
pub const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of union bpf_attr.
#[repr(C)]
#[derive(Default)]
pub struct BatchAttr {
    pub in_batch: u64,
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// Runs batch command `cmd` with `attr`; the kernel writes the entries it moved into
/// `attr.count`.
///
/// # Safety
/// `attr.keys` and `attr.values` (and the batch cursors, where the command uses them)
/// point at buffers sized for `attr.count` keys and values of the map's sizes, alive
/// for the call.
pub unsafe fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller's promise on the buffers; attr is the batch layout of union
    // bpf_attr and its size goes along.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            core::mem::size_of::<BatchAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
