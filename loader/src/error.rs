//! The loader's error type: one variant per failure mode, named fields,
//! lowercase messages quoting the names involved.

use std::io;
use std::path::PathBuf;

use egret_bpf::artifact::ArtifactError;
use egret_bpf::elf::ElfError;

use crate::meta::MetaError;
use crate::pins::Generation;

/// Everything that can go wrong in the loader.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    // ----- the artifact itself (pure checks, before any syscall) -----
    /// Format, digest or map image entry sizes are wrong.
    #[error("invalid artifact: {source}")]
    InvalidArtifact {
        /// What `Artifact::check` found.
        source: ArtifactError,
    },
    /// The object is not an ELF egret can read.
    #[error("artifact object is not a BPF object egret can load: {source}")]
    CorruptObject {
        /// What the ELF reader found.
        source: ElfError,
    },
    /// The artifact was compiled for another node.
    #[error("artifact is for node `{artifact}`, this loader serves node `{loader}`")]
    WrongNode {
        /// The manifest's node.
        artifact: String,
        /// The loader's node.
        loader: String,
    },
    /// The manifest lists a program the object lacks.
    #[error("manifest lists program `{program}`, which the object does not contain")]
    ProgramMissing {
        /// Program name.
        program: String,
    },
    /// The object has a program the manifest does not attach.
    #[error("object contains program `{program}`, which the manifest attaches nowhere")]
    ProgramUnlisted {
        /// Program name.
        program: String,
    },
    /// A program with neither an attach point nor a tail-call slot.
    #[error("program `{program}` is neither attached nor a tail-call target")]
    ProgramUnused {
        /// Program name.
        program: String,
    },
    /// A tail-call slot that cannot be filled as named.
    #[error("program `{program}`: tail-call slot {map}[{index}]: {reason}")]
    TailCallInvalid {
        /// The target program.
        program: String,
        /// The `prog_array` map it names.
        map: String,
        /// The slot.
        index: u32,
        /// What is wrong (no such map, not a `prog_array`, out of range, slot taken).
        reason: String,
    },
    /// A `prog_array` map image with entries (slots are filled from the
    /// programs' tail-call specs, never from raw bytes).
    #[error("map image `{map}` is a prog_array with {entries} entries; prog_array images must be empty")]
    ProgArrayImage {
        /// Map name.
        map: String,
        /// Entries in the image.
        entries: usize,
    },
    /// A late-bound map value field resolved to a value that does not fit 32 bits.
    #[error("map `{map}`: late field at offset {offset} resolved to {value}, which does not fit a u32")]
    LateFieldRange {
        /// Map name.
        map: String,
        /// Field offset in the value.
        offset: u32,
        /// The resolved value.
        value: i64,
    },
    /// A tunnel device of egret's name that egret did not create.
    #[error("tunnel device `{device}` is not egret's: {reason}")]
    TunnelForeign {
        /// Device name.
        device: String,
        /// Why it is left alone.
        reason: String,
    },
    /// A sysctl could not be written.
    #[error("cannot write `{path}`: {source}")]
    Sysctl {
        /// The `/proc/sys` path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Two programs at one attach point.
    #[error("programs `{first}` and `{second}` both attach at {attach}")]
    DuplicateAttachPoint {
        /// The attach point (kebab-case).
        attach: &'static str,
        /// First program.
        first: String,
        /// Second program.
        second: String,
    },
    /// A map image whose geometry differs from the object's map.
    #[error("map image `{map}` does not fit the object: {field} is {image} in the image, {object} in the object")]
    MapImageMismatch {
        /// Map name.
        map: String,
        /// Which field differs (`kind`, `key_size`, ...).
        field: &'static str,
        /// The image's value.
        image: String,
        /// The object's value.
        object: String,
    },
    /// A map image for a map the object does not define (an image for another plan).
    #[error("map image `{map}` names no map of the object (an image for another plan?)")]
    MapImageUnknown {
        /// Map name.
        map: String,
    },
    /// A map of the object without an image.
    #[error("the object's map `{map}` has no map image")]
    MapImageMissing {
        /// Map name.
        map: String,
    },
    /// A hole without a source in the manifest.
    #[error("hole `%{hole}` has no source in the manifest")]
    HoleUnsourced {
        /// Hole name.
        hole: String,
    },
    /// A hole with two sources.
    #[error("hole `%{hole}` has two sources in the manifest")]
    HoleDuplicate {
        /// Hole name.
        hole: String,
    },

    // ----- resolving the artifact on this node -----
    /// A `SlotIpv4` / `SlotIpv6` source for a slot the node has no address
    /// of that family for.
    #[error("{hole}: egress slot {slot} has no {family} address on this node")]
    UnknownSlot {
        /// The hole or late field (`hole %NAME`, `map `M` late field at offset N`).
        hole: String,
        /// Slot number.
        slot: u32,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// A source wider than what it fills: an IPv6 address for a hole (an
    /// immediate) or a 32-bit field (refused by `Artifact::check` already;
    /// kept so the loader never truncates one).
    #[error("{hole}: source {from} does not fit it")]
    HoleWide {
        /// The hole or late field.
        hole: String,
        /// Its source.
        from: egret_bpf::artifact::HoleSource,
    },
    /// An interface the artifact or configuration names does not exist.
    #[error("interface `{interface}` ({purpose}) does not exist")]
    MissingInterface {
        /// Interface name.
        interface: String,
        /// Why it was needed (`hole %tunnel_ifindex`, `tunnel device`, ...).
        purpose: String,
    },
    /// No interface with this ifindex.
    #[error("no interface has ifindex {ifindex}")]
    MissingIfindex {
        /// The ifindex.
        ifindex: u32,
    },
    /// A pod IP whose route does not lead to a local interface.
    #[error("pod {ip} is not behind a local interface: {reason}")]
    PodNotLocal {
        /// Pod IP.
        ip: std::net::IpAddr,
        /// What the route lookup found.
        reason: String,
    },
    /// A netlink or interface lookup failed.
    #[error("{request}: {source}")]
    Netlink {
        /// What was asked.
        request: String,
        /// The failure.
        source: io::Error,
    },
    /// A hole value that does not fit, or a re-written object that fails.
    #[error("filling holes: {source}")]
    HoleFill {
        /// The ELF layer's error.
        source: ElfError,
    },

    // ----- the kernel -----
    /// aya could not load the object (map creation, BTF, relocation).
    #[error("loading the object into the kernel: {source}")]
    ObjectLoad {
        /// aya's error.
        source: Box<aya::EbpfError>,
    },
    /// The kernel verifier rejected a program.
    #[error("the kernel verifier rejected program `{program}` ({source}); verifier log:\n{log}")]
    VerifierRejected {
        /// Program name.
        program: String,
        /// `BPF_PROG_LOAD`'s error.
        source: io::Error,
        /// The verifier's log.
        log: String,
    },
    /// Another failure on a program (not found in the object, wrong type, pin).
    #[error("program `{program}`: {source}")]
    Program {
        /// Program name.
        program: String,
        /// aya's error.
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("map `{map}`: {operation}: {source}")]
    Map {
        /// Map name.
        map: String,
        /// What was done.
        operation: &'static str,
        /// The failure.
        source: io::Error,
    },
    /// A pin path the loader was about to create already exists.
    #[error("pin `{path}` already exists")]
    PinConflict {
        /// The path.
        path: PathBuf,
    },
    /// A filesystem or pin operation under the root failed.
    #[error("`{path}`: {operation}: {source}")]
    Bpffs {
        /// The path.
        path: PathBuf,
        /// What was done.
        operation: &'static str,
        /// The failure.
        source: io::Error,
    },
    /// The configured root is not on a bpf filesystem.
    #[error("`{path}` is not on a bpf filesystem (mount -t bpf bpf DIR)")]
    NotBpffs {
        /// The path.
        path: PathBuf,
    },
    /// Another loader holds the root (one loader per root at a time).
    #[error("another loader is using `{root}`")]
    Busy {
        /// The root.
        root: PathBuf,
    },
    /// A generation marker that does not decode.
    #[error("generation marker `{path}`: {source}")]
    Meta {
        /// The marker's path.
        path: PathBuf,
        /// Why.
        source: MetaError,
    },
    /// Attaching a program to an interface failed.
    #[error("attaching `{program}` at {attach} of `{interface}`: {source}")]
    Attach {
        /// Program name.
        program: String,
        /// Attach point (kebab-case).
        attach: &'static str,
        /// Interface name.
        interface: String,
        /// aya's error.
        source: Box<aya::programs::ProgramError>,
    },
    /// A link operation failed.
    #[error("link `{path}`: {operation}: {source}")]
    Link {
        /// The link's pin.
        path: PathBuf,
        /// What was done.
        operation: &'static str,
        /// The failure.
        source: io::Error,
    },
    /// Replacing a link's program failed during a swap; the swap was undone.
    #[error(
        "swap to generation {to} failed at link `{path}`: {reason}; {} link(s) restored to {}, generation {to} deleted",
        restored,
        from.map_or_else(|| "their previous programs".to_string(), |g| format!("generation {g}"))
    )]
    SwapFailed {
        /// The generation that was being swapped in.
        to: Generation,
        /// The generation that keeps serving.
        from: Option<Generation>,
        /// The link that failed.
        path: PathBuf,
        /// Why it failed.
        reason: String,
        /// Links moved back.
        restored: usize,
    },
}

impl LoaderError {
    pub(crate) fn bpffs(path: impl Into<PathBuf>, operation: &'static str, source: io::Error) -> LoaderError {
        LoaderError::Bpffs { path: path.into(), operation, source }
    }

    /// A stable, bounded label for metrics (never formatted text).
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            LoaderError::InvalidArtifact { .. } => "invalid_artifact",
            LoaderError::CorruptObject { .. } => "corrupt_object",
            LoaderError::WrongNode { .. } => "wrong_node",
            LoaderError::ProgramMissing { .. } => "program_missing",
            LoaderError::ProgramUnlisted { .. } => "program_unlisted",
            LoaderError::ProgramUnused { .. } => "program_unused",
            LoaderError::TailCallInvalid { .. } => "tail_call_invalid",
            LoaderError::ProgArrayImage { .. } => "prog_array_image",
            LoaderError::LateFieldRange { .. } => "late_field_range",
            LoaderError::TunnelForeign { .. } => "tunnel_foreign",
            LoaderError::Sysctl { .. } => "sysctl",
            LoaderError::DuplicateAttachPoint { .. } => "duplicate_attach_point",
            LoaderError::MapImageMismatch { .. } => "map_image_mismatch",
            LoaderError::MapImageUnknown { .. } => "map_image_unknown",
            LoaderError::MapImageMissing { .. } => "map_image_missing",
            LoaderError::HoleUnsourced { .. } => "hole_unsourced",
            LoaderError::HoleDuplicate { .. } => "hole_duplicate",
            LoaderError::UnknownSlot { .. } => "unknown_slot",
            LoaderError::HoleWide { .. } => "hole_wide",
            LoaderError::MissingInterface { .. } => "missing_interface",
            LoaderError::MissingIfindex { .. } => "missing_ifindex",
            LoaderError::PodNotLocal { .. } => "pod_not_local",
            LoaderError::Netlink { .. } => "netlink",
            LoaderError::HoleFill { .. } => "hole_fill",
            LoaderError::ObjectLoad { .. } => "object_load",
            LoaderError::VerifierRejected { .. } => "verifier_rejected",
            LoaderError::Program { .. } => "program",
            LoaderError::Map { .. } => "map",
            LoaderError::PinConflict { .. } => "pin_conflict",
            LoaderError::Bpffs { .. } => "bpffs",
            LoaderError::NotBpffs { .. } => "not_bpffs",
            LoaderError::Busy { .. } => "busy",
            LoaderError::Meta { .. } => "meta",
            LoaderError::Attach { .. } => "attach",
            LoaderError::Link { .. } => "link",
            LoaderError::SwapFailed { .. } => "swap_failed",
        }
    }
}
