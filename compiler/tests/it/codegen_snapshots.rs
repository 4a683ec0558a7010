//! Snapshots of the generated classifier's text form (`egret compile --emit
//! asm`) on the article's example, both layouts: a change in the generated
//! code is reviewed as a diff (`cargo insta review`).

use crate::codegen_common as common;

use egret_compiler::codegen::{self, Layout, Options};

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({snapshot_path => "../out", prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

#[test]
fn classifier_assembly() {
    let (_, w) = common::article_worlds().into_iter().next().expect("article");
    let plans = common::plans(&w);
    for node in ["worker-1", "gateway-1"] {
        for layout in [Layout::Inline, Layout::Maps] {
            let g = codegen::generate(&plans[node], &Options { layout: Some(layout), ..Options::default() })
                .expect("generates");
            snap!(format!("asm-{node}-{layout}"), g.asm());
        }
    }
}
