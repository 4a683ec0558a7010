mod common;
#[test]
fn dump() {
    let mut w = egret_bpf::elf::ObjectWriter::new(common::sample_maps(), "GPL").unwrap();
    w.add_unverified_program(common::opcode_program("opcodes")).unwrap();
    w.add_unverified_program(common::assemble("classify", common::CLASSIFY).program).unwrap();
    w.add_unverified_program(common::assemble("tunnel", common::TUNNEL).program).unwrap();
    std::fs::write("/tmp/learn/egret.o", w.write().unwrap()).unwrap();
}
