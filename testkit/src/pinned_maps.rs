//! Real BPF maps for tests of code that opens pinned maps: each map of
//! `defs` is created by the kernel (through aya, from an object egret writes
//! with one trivial program) and pinned at `dir/<name>`. The caller owns the
//! pins (a private bpffs mount, unmounted on drop, removes them).

use std::path::Path;

use egret_bpf::MapDef;

/// Creates every map of `defs` and pins it at `dir/<map name>` (`dir` must
/// exist on a bpffs mount). Names are used as they are: callers pass names
/// without dots (bpffs refuses them).
pub fn create_pinned(dir: &Path, defs: &[MapDef]) {
    let program = egret_bpf::asm::assemble("noop", "r0 = 0\nexit").expect("assembles").program;
    let object = egret_bpf::elf::verify_and_write(&[program], defs, "GPL").expect("object");
    let mut loader = aya::EbpfLoader::new();
    loader.btf(None);
    let names: Vec<&'static str> = defs.iter().map(|d| &*Box::leak(d.name.clone().into_boxed_str())).collect();
    for name in names {
        loader.map_pin_path(name, dir.join(name));
    }
    let ebpf = loader.load(&object).expect("maps created");
    for d in defs {
        assert!(ebpf.map(&d.name).is_some(), "map `{}` created", d.name);
        assert!(dir.join(&d.name).exists(), "map `{}` pinned", d.name);
    }
}
