//! Maps as bytes: what the layout migration needs to copy a map whose key and value
//! types this release may no longer have (an older release's), and to make the one map
//! no program declares (the layout record). Plain bpf(2) calls on a map's fd.
use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::maps::MapData;

use super::DatapathError;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

/// Map types, as the kernel numbers them (enum bpf_map_type).
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const RINGBUF: u32 = 27;
}

/// The `map_create` member of union bpf_attr, up to map_name.
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `elem` member of union bpf_attr (lookup, update, get-next-key).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `obj` member of union bpf_attr (pin).
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is one member of union bpf_attr, laid out as the kernel's; the
    // pointers in it point at buffers the callers sized for the map's key and value.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn sys(call: &'static str) -> impl FnOnce(std::io::Error) -> DatapathError {
    move |source| DatapathError::Syscall { call, source }
}

/// Makes an array of `u32`s with `entries` entries named `name`, pinned at `pin`.
pub fn create_pinned_u32_array(name: &str, entries: u32, pin: &Path) -> Result<(), DatapathError> {
    let mut attr = CreateAttr {
        map_type: map_type::ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        ..Default::default()
    };
    for (d, s) in attr.map_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let fd = bpf(BPF_MAP_CREATE, &mut attr).map_err(sys("BPF_MAP_CREATE"))?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let path =
        CString::new(pin.as_os_str().as_encoded_bytes()).map_err(|_| DatapathError::Pin {
            path: pin.to_path_buf(),
            why: "the path has a NUL byte".into(),
        })?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &mut attr).map_err(sys("BPF_OBJ_PIN"))?;
    Ok(())
}

/// What the copy needs to know of a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl Shape {
    pub fn of(map: &MapData) -> Result<Shape, DatapathError> {
        let info = map.info().map_err(|e| DatapathError::Map(e.to_string()))?;
        Ok(Shape {
            map_type: info
                .map_type()
                .map(|t| t as u32)
                .map_err(|e| DatapathError::Map(e.to_string()))?,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        })
    }

    fn per_cpu(&self) -> bool {
        matches!(
            self.map_type,
            map_type::PERCPU_ARRAY | map_type::PERCPU_HASH | map_type::LRU_PERCPU_HASH
        )
    }

    fn is_array(&self) -> bool {
        matches!(self.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY)
    }

    /// The bytes one lookup returns: per-CPU maps give one 8-byte aligned slot per
    /// possible CPU.
    fn value_bytes(&self) -> Result<usize, DatapathError> {
        if self.per_cpu() {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| sys("possible CPUs")(e))?;
            Ok(cpus * (self.value_size as usize).div_ceil(8) * 8)
        } else {
            Ok(self.value_size as usize)
        }
    }

    /// Whether entries of `self` can be written into a map of `other` as they are: the
    /// same kind of map and the same key and value sizes (capacity may differ).
    pub fn entries_fit(&self, other: &Shape) -> bool {
        self.kind() == other.kind()
            && self.key_size == other.key_size
            && self.value_size == other.value_size
    }

    /// Map types whose entries are the same bytes: a plain and an LRU hash take each
    /// other's entries (conntrack moved from one to the other).
    fn kind(&self) -> u32 {
        match self.map_type {
            map_type::LRU_HASH => map_type::HASH,
            map_type::LRU_PERCPU_HASH => map_type::PERCPU_HASH,
            t => t,
        }
    }
}

fn fd_of(map: &MapData) -> u32 {
    map.fd().as_fd().as_raw_fd() as u32
}

fn lookup(map: &MapData, key: &[u8], value: &mut [u8]) -> std::io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd_of(map),
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

fn update(map: &MapData, key: &[u8], value: &[u8], flags: u64) -> std::io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd_of(map),
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// The key after `key` (the first key with None); None at the end.
fn next_key(map: &MapData, key: Option<&[u8]>, next: &mut [u8]) -> std::io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: fd_of(map),
        key: key.map(|k| k.as_ptr() as u64).unwrap_or(0),
        value: next.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Copies every entry of `from` into `to` (both of the same shape but for capacity):
/// arrays index by index up to the smaller one, hashes and tries key by key until `to`
/// is full. Entries already in `to` are overwritten. Returns how many were written.
pub fn copy_entries(from: &MapData, to: &MapData) -> Result<usize, DatapathError> {
    copy(from, to, BPF_ANY)
}

/// Copies the entries of `from` that `to` does not have (hashes and tries; arrays have
/// every index already). For entries the old programs made after `copy_entries`.
pub fn copy_missing_entries(from: &MapData, to: &MapData) -> Result<usize, DatapathError> {
    if Shape::of(from)?.is_array() {
        return Ok(0);
    }
    copy(from, to, BPF_NOEXIST)
}

fn copy(from: &MapData, to: &MapData, flags: u64) -> Result<usize, DatapathError> {
    let (fs, ts) = (Shape::of(from)?, Shape::of(to)?);
    if !fs.entries_fit(&ts) || fs.map_type == map_type::RINGBUF {
        return Err(DatapathError::Map(format!(
            "cannot copy a map of {fs:?} into one of {ts:?}"
        )));
    }
    let mut value = vec![0u8; fs.value_bytes()?];
    let mut copied = 0;
    if fs.is_array() {
        for i in 0..fs.max_entries.min(ts.max_entries) {
            let key = i.to_ne_bytes();
            lookup(from, &key, &mut value).map_err(sys("BPF_MAP_LOOKUP_ELEM"))?;
            update(to, &key, &value, BPF_ANY).map_err(sys("BPF_MAP_UPDATE_ELEM"))?;
            copied += 1;
        }
        return Ok(copied);
    }
    let mut key = vec![0u8; fs.key_size as usize];
    let mut next = vec![0u8; fs.key_size as usize];
    let mut first = true;
    while next_key(from, (!first).then_some(&key[..]), &mut next)
        .map_err(sys("BPF_MAP_GET_NEXT_KEY"))?
    {
        first = false;
        std::mem::swap(&mut key, &mut next);
        match lookup(from, &key, &mut value) {
            Ok(()) => {}
            // Deleted between the two calls (a datapath still writes the old map).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(sys("BPF_MAP_LOOKUP_ELEM")(e)),
        }
        match update(to, &key, &value, flags) {
            Ok(()) => copied += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            // The new map is full (it is smaller): what did not fit is lost.
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => break,
            Err(e) => return Err(sys("BPF_MAP_UPDATE_ELEM")(e)),
        }
    }
    Ok(copied)
}

/// The `u32` at `index` of an array of `u32`s.
pub fn read_u32(map: &MapData, index: u32) -> Result<u32, DatapathError> {
    let mut v = [0u8; 4];
    lookup(map, &index.to_ne_bytes(), &mut v).map_err(sys("BPF_MAP_LOOKUP_ELEM"))?;
    Ok(u32::from_ne_bytes(v))
}

pub fn write_u32(map: &MapData, index: u32, value: u32) -> Result<(), DatapathError> {
    update(map, &index.to_ne_bytes(), &value.to_ne_bytes(), BPF_ANY)
        .map_err(sys("BPF_MAP_UPDATE_ELEM"))
}
