//! The few `bpf(2)` commands the loader needs that aya 0.14 does not expose
//! safely: byte-level map element access for maps whose key and value sizes
//! are known only at run time (aya's typed maps need them at compile time),
//! link info including the tcx union (aya's `LinkInfo` has no ifindex), object
//! info by fd, `BPF_OBJ_GET`/`BPF_OBJ_PIN` on raw fds, and creating the small
//! metadata map.
//!
//! This is the crate's only `unsafe` code. Every wrapper is safe: buffers
//! handed to the kernel are sized from the map's own `key_size`/`value_size`
//! (checked before the call), and every attribute struct is `#[repr(C)]` with
//! the kernel's layout (`include/uapi/linux/bpf.h`), zero-initialized, passed
//! with its exact size (the kernel zero-fills the rest of `union bpf_attr`).
#![expect(unsafe_code, reason = "raw bpf(2) calls; see the module doc")]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_OBJ_PIN: u32 = 6;
const BPF_OBJ_GET: u32 = 7;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_MAP_FREEZE: u32 = 22;
const BPF_LINK_DETACH: u32 = 34;

/// `BPF_F_RDONLY_PROG`: programs may read the map, never write it.
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;

/// `BPF_MAP_TYPE_ARRAY`.
pub const MAP_TYPE_ARRAY: u32 = 2;

/// `BPF_LINK_TYPE_TCX`.
pub const LINK_TYPE_TCX: u32 = 11;

/// `BPF_TCX_INGRESS`.
pub const TCX_INGRESS: u32 = 46;

fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] struct of
    // exactly `size_of::<T>()` bytes; every pointer inside it was built by the
    // callers below from live buffers of the sizes the kernel will use.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            libc::c_long::from(cmd),
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn fd_from(ret: i64) -> io::Result<OwnedFd> {
    let raw = i32::try_from(ret).map_err(|_| io::Error::other("bpf(2) returned an fd out of range"))?;
    // SAFETY: a non-negative return of these commands is a new fd this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

/// `BPF_OBJ_GET`: opens a pinned object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut attr = ObjAttr { pathname: p.as_ptr() as u64, ..ObjAttr::default() };
    fd_from(bpf(BPF_OBJ_GET, &mut attr)?)
}

/// `BPF_OBJ_PIN`: pins an object at `path` (fails with `EEXIST` if taken).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    let mut attr = ObjAttr { pathname: p.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, ..ObjAttr::default() };
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// `BPF_LINK_DETACH`: detaches a link now (synchronously), whoever else
/// holds it; the link object stays until its last reference goes.
pub fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct DetachAttr {
        link_fd: u32,
    }
    expect_kind(fd, ObjectKind::Link)?;
    bpf(BPF_LINK_DETACH, &mut DetachAttr { link_fd: fd.as_raw_fd() as u32 }).map(|_| ())
}

/// What kind of bpf object an fd refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A map.
    Map,
    /// A program.
    Program,
    /// A link.
    Link,
    /// Something else (BTF, not a bpf fd).
    Other,
}

/// The kind of a bpf fd, from its anonymous inode name
/// (`anon_inode:bpf-map`, `anon_inode:bpf-prog`, `anon_inode:bpf-link`).
/// `BPF_OBJ_GET_INFO_BY_FD` dispatches on the kind, so callers must know it
/// before they interpret the info bytes.
pub fn object_kind(fd: BorrowedFd<'_>) -> io::Result<ObjectKind> {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(match target.as_os_str().as_bytes() {
        b"anon_inode:bpf-map" => ObjectKind::Map,
        b"anon_inode:bpf-prog" => ObjectKind::Program,
        // `bpf-link` since Linux 6.x, `bpf_link` before
        b"anon_inode:bpf-link" | b"anon_inode:bpf_link" => ObjectKind::Link,
        _ => ObjectKind::Other,
    })
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn info_by_fd<I: Default>(fd: BorrowedFd<'_>) -> io::Result<I> {
    let mut info = I::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<I>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

fn expect_kind(fd: BorrowedFd<'_>, want: ObjectKind) -> io::Result<()> {
    let kind = object_kind(fd)?;
    if kind == want {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bpf object is a {kind:?}, not a {want:?}")))
    }
}

/// The head of `struct bpf_link_info` with the tcx member of its union.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    ifindex: u32,
    attach_type: u32,
}

/// What the kernel says about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// `BPF_LINK_TYPE_*`.
    pub kind: u32,
    /// Link id.
    pub id: u32,
    /// Id of the program the link runs now.
    pub prog_id: u32,
    /// For tcx links: the device, or 0 once the device is gone (the kernel
    /// detaches a tcx link when its device unregisters).
    pub ifindex: u32,
    /// For tcx links: `BPF_TCX_INGRESS` or `BPF_TCX_EGRESS`.
    pub attach_type: u32,
}

/// Link info of a link fd.
pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    expect_kind(fd, ObjectKind::Link)?;
    let raw: RawLinkInfo = info_by_fd(fd)?;
    Ok(LinkInfo {
        kind: raw.kind,
        id: raw.id,
        prog_id: raw.prog_id,
        ifindex: raw.ifindex,
        attach_type: raw.attach_type,
    })
}

/// The head of `struct bpf_prog_info`.
#[repr(C)]
#[derive(Default)]
struct RawProgInfo {
    kind: u32,
    id: u32,
    tag: [u8; 8],
}

/// The id of a program fd.
pub fn prog_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    expect_kind(fd, ObjectKind::Program)?;
    let raw: RawProgInfo = info_by_fd(fd)?;
    Ok(raw.id)
}

/// The head of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default)]
struct RawMapInfo {
    kind: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; 16],
}

/// What the kernel says about a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    /// `BPF_MAP_TYPE_*`.
    pub kind: u32,
    /// Map id.
    pub id: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// The kernel's copy of the name (at most 15 bytes).
    pub name: String,
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`), the number of
/// values a per-CPU map holds per key.
pub fn possible_cpus() -> io::Result<usize> {
    aya::util::nr_cpus().map_err(|(path, e)| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// True for per-CPU map types (`PERCPU_HASH` 5, `PERCPU_ARRAY` 6, `LRU_PERCPU_HASH` 10,
/// `PERCPU_CGROUP_STORAGE` 21).
#[must_use]
pub const fn is_percpu_type(kind: u32) -> bool {
    matches!(kind, 5 | 6 | 10 | 21)
}

/// An open map with its geometry; element access checks sizes against it.
#[derive(Debug)]
pub struct MapHandle {
    fd: OwnedFd,
    info: MapInfo,
    /// Values per key (possible CPUs for per-CPU maps, else 1).
    slots: usize,
}

impl MapHandle {
    /// Opens a pinned map.
    pub fn open(path: &Path) -> io::Result<MapHandle> {
        MapHandle::from_fd(obj_get(path)?)
    }

    /// Wraps a map fd.
    pub fn from_fd(fd: OwnedFd) -> io::Result<MapHandle> {
        expect_kind(fd.as_fd(), ObjectKind::Map)?;
        let raw: RawMapInfo = info_by_fd(fd.as_fd())?;
        let end = raw.name.iter().position(|b| *b == 0).unwrap_or(raw.name.len());
        let info = MapInfo {
            kind: raw.kind,
            id: raw.id,
            key_size: raw.key_size,
            value_size: raw.value_size,
            max_entries: raw.max_entries,
            flags: raw.map_flags,
            name: String::from_utf8_lossy(&raw.name[..end]).into_owned(),
        };
        let slots = if is_percpu_type(info.kind) { possible_cpus()? } else { 1 };
        Ok(MapHandle { fd, info, slots })
    }

    /// Creates an `ARRAY` map (the loader's metadata map).
    pub fn create_array(name: &str, value_size: u32, max_entries: u32) -> io::Result<MapHandle> {
        MapHandle::create_array_flags(name, value_size, max_entries, 0)
    }

    /// Creates an `ARRAY` map with `map_flags`.
    pub fn create_array_flags(name: &str, value_size: u32, max_entries: u32, flags: u32) -> io::Result<MapHandle> {
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
        let mut attr = CreateAttr {
            map_type: MAP_TYPE_ARRAY,
            key_size: 4,
            value_size,
            max_entries,
            map_flags: flags,
            ..Default::default()
        };
        for (dst, src) in attr.map_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src;
        }
        MapHandle::from_fd(fd_from(bpf(BPF_MAP_CREATE, &mut attr)?)?)
    }

    /// `BPF_MAP_FREEZE`: no further writes from user space.
    pub fn freeze(&self) -> io::Result<()> {
        #[repr(C)]
        struct FreezeAttr {
            map_fd: u32,
        }
        bpf(BPF_MAP_FREEZE, &mut FreezeAttr { map_fd: self.fd.as_raw_fd() as u32 }).map(|_| ())
    }

    /// The map's geometry.
    #[must_use]
    pub fn info(&self) -> &MapInfo {
        &self.info
    }

    /// The fd.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Bytes of one value slot as the syscall lays them out (per-CPU values
    /// are rounded up to 8 bytes each).
    fn slot_stride(&self) -> usize {
        let v = self.info.value_size as usize;
        if is_percpu_type(self.info.kind) { v.div_ceil(8) * 8 } else { v }
    }

    /// Bytes the kernel reads or writes for one element's value.
    #[must_use]
    pub fn raw_value_len(&self) -> usize {
        self.slot_stride() * self.slots
    }

    fn check_key(&self, key: &[u8]) -> io::Result<()> {
        if key.len() == self.info.key_size as usize {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("key of {} bytes for a map with {}-byte keys", key.len(), self.info.key_size),
            ))
        }
    }

    /// Writes one element. `value` is one value of `value_size` bytes; for
    /// per-CPU maps it is written for every CPU.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        self.check_key(key)?;
        if value.len() != self.info.value_size as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("value of {} bytes for a map with {}-byte values", value.len(), self.info.value_size),
            ));
        }
        let stride = self.slot_stride();
        let mut raw = vec![0u8; self.raw_value_len()];
        for slot in raw.chunks_mut(stride) {
            slot[..value.len()].copy_from_slice(value);
        }
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value: raw.as_ptr() as u64,
            flags,
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Deletes one element; an absent key is not an error.
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        self.check_key(key)?;
        let mut attr =
            ElemAttr { map_fd: self.fd.as_raw_fd() as u32, pad: 0, key: key.as_ptr() as u64, value: 0, flags: 0 };
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Reads one element: one value per slot (one slot unless per-CPU), each
    /// `value_size` bytes; `None` if the key is absent.
    pub fn lookup(&self, key: &[u8]) -> io::Result<Option<Vec<Vec<u8>>>> {
        self.check_key(key)?;
        let mut raw = vec![0u8; self.raw_value_len()];
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value: raw.as_mut_ptr() as u64,
            flags: 0,
        };
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
        let v = self.info.value_size as usize;
        Ok(Some(raw.chunks(self.slot_stride()).map(|s| s[..v].to_vec()).collect()))
    }

    /// Every key, in the kernel's iteration order (none for a ring
    /// buffer, which has no keys: the kernel refuses to iterate it).
    pub fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        if self.info.kind == egret_bpf::MapKind::RingBuf.type_id() {
            return Ok(Vec::new());
        }
        let k = self.info.key_size as usize;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let limit = self.info.max_entries as usize;
        loop {
            let mut next = vec![0u8; k];
            let mut attr = ElemAttr {
                map_fd: self.fd.as_raw_fd() as u32,
                pad: 0,
                key: keys.last().map_or(0, |prev| prev.as_ptr() as u64),
                value: next.as_mut_ptr() as u64,
                flags: 0,
            };
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(e),
            }
            keys.push(next);
            // a map mutated while iterated can restart from the first key;
            // never loop past its capacity
            if keys.len() > limit {
                return Ok(keys);
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: what `bpf_ktime_get_ns` returns now.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a live, exclusively borrowed timespec.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) } == 0;
    if !ok {
        return 0;
    }
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_layouts_match_the_kernel_uapi() {
        assert_eq!(std::mem::size_of::<ElemAttr>(), 32);
        assert_eq!(std::mem::size_of::<ObjAttr>(), 24);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
        // struct bpf_link_info: type, id, prog_id, then the 8-aligned union whose
        // tcx member is { ifindex, attach_type }
        assert_eq!(std::mem::offset_of!(RawLinkInfo, ifindex), 16);
        assert_eq!(std::mem::offset_of!(RawMapInfo, name), 24);
        assert_eq!(std::mem::offset_of!(RawProgInfo, id), 4);
    }

    #[test]
    fn percpu_types() {
        assert!(is_percpu_type(6));
        assert!(is_percpu_type(5));
        assert!(!is_percpu_type(1));
        assert!(!is_percpu_type(MAP_TYPE_ARRAY));
    }
}
