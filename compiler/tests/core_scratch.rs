use egret_compiler::*;
use egret_lang::source::SourceMap;

#[test]
fn scratch() {
    let mut sm = SourceMap::new();
    let mut b = egret_lang::ast::Bundle::default();
    for f in ["tests/in/article/policy.yaml", "tests/in/article/cluster.yaml"] {
        let l = egret_lang::load::parse_text(&mut sm, f, std::fs::read_to_string(f).unwrap());
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        b.extend(l.bundle);
    }
    let w = resolve::World::new(&b, &resolve::Options { service_cidrs: vec!["10.96.0.0/12".parse().unwrap()] });
    println!("{:?}", w.diagnostics());
    for st in ir::Stage::ALL {
        let m = compile::emit_ir(&w, "worker-1", st).unwrap();
        println!("{}", ir::text::emit(&m));
    }
    for n in ["worker-1", "gateway-1"] {
        let p = compile::compile_node(&w, n).unwrap();
        println!("{}", p.to_text());
        println!("{}", cilium::render(&w, n, cilium::Format::Text).unwrap());
    }
    let d = eval::decide(&w, eval::Source::Ip("10.244.1.10".parse().unwrap()), "8.8.8.8".parse().unwrap());
    println!("{d:#?}");
}
