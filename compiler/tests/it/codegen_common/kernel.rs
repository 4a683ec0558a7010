//! Loading egret artifacts into the kernel with aya 0.14 (privileged):
//! holes filled, maps filled from the images, the classifier loaded through
//! the kernel verifier, packets run with `BPF_PROG_TEST_RUN`. Used by the
//! privileged tests and by the layout benchmark.

use aya::maps::PerCpuArray;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use egret_bpf::artifact::Artifact;
use egret_compiler::codegen::{self, reasons::Counter, tables};

/// The ifindex put in `%tunnel_ifindex` (loopback: `BPF_PROG_TEST_RUN` does
/// not perform the redirect, it returns the verdict).
pub const TEST_IFINDEX: i64 = 1;

use egret_testkit::privileged as privileged_gate;
pub use privileged_gate::privileged;

fn arr<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into().map_err(|_| format!("expected {N} bytes, got {}", b.len()))
}

/// An artifact loaded into the kernel.
pub struct Loaded {
    pub bpf: aya::Ebpf,
}

/// The size of an `egret_dst_*` value.
const RECORD: usize = egret_bpf::layout::action_record::SIZE;

/// Fills the holes, loads the object and the map images, and loads the
/// classifier through the kernel verifier.
pub fn load(a: &Artifact) -> Result<Loaded, String> {
    let values = codegen::equiv::hole_values(&a.manifest.holes, TEST_IFINDEX);
    let object = egret_bpf::elf::fill_holes(&a.object, &values).map_err(|e| format!("fill holes: {e}"))?;
    let mut bpf = aya::Ebpf::load(&object).map_err(|e| format!("aya load: {e}"))?;
    for img in &a.manifest.maps {
        let entries = img.decoded().map_err(|e| e.to_string())?;
        if entries.is_empty() {
            continue;
        }
        let map = bpf.map_mut(&img.name).ok_or_else(|| format!("no map {}", img.name))?;
        match img.name.as_str() {
            tables::DST_V4 => {
                let mut m: LpmTrie<_, [u8; 8], [u8; RECORD]> = LpmTrie::try_from(map).map_err(|e| e.to_string())?;
                for (k, v) in entries {
                    let plen = u32::from_le_bytes(arr::<4>(&k[..4])?);
                    m.insert(&Key::new(plen, arr::<8>(&k[4..])?), arr::<RECORD>(&v)?, 0).map_err(|e| e.to_string())?;
                }
            }
            tables::DST_V6 => {
                let mut m: LpmTrie<_, [u8; 20], [u8; RECORD]> = LpmTrie::try_from(map).map_err(|e| e.to_string())?;
                for (k, v) in entries {
                    let plen = u32::from_le_bytes(arr::<4>(&k[..4])?);
                    m.insert(&Key::new(plen, arr::<20>(&k[4..])?), arr::<RECORD>(&v)?, 0).map_err(|e| e.to_string())?;
                }
            }
            tables::CHOICES => {
                let mut m: aya::maps::Array<_, [u8; egret_bpf::choices::VALUE_SIZE as usize]> =
                    aya::maps::Array::try_from(map).map_err(|e| e.to_string())?;
                for (k, v) in entries {
                    let index = u32::from_le_bytes(arr::<4>(&k)?);
                    m.set(index, arr::<{ egret_bpf::choices::VALUE_SIZE as usize }>(&v)?, 0)
                        .map_err(|e| e.to_string())?;
                }
            }
            other => return Err(format!("no loader for the image of {other}")),
        }
    }
    let prog: &mut SchedClassifier = bpf
        .program_mut(codegen::PROGRAM)
        .ok_or("no program egret_src")?
        .try_into()
        .map_err(|e| format!("not a classifier: {e}"))?;
    prog.load().map_err(|e| format!("kernel verifier: {e:?}"))?;
    Ok(Loaded { bpf })
}

/// One `BPF_PROG_TEST_RUN` result.
#[derive(Debug, Clone)]
pub struct Ran {
    pub retval: i32,
    /// `skb->cb[0]` after the run.
    pub cb0: u32,
    /// The frame after the run.
    pub frame: Vec<u8>,
}

impl Loaded {
    /// Makes `egret_gw_live` hold exactly `down` (each with the down flag;
    /// `before` is what it held) and `egret_gw_down` their number.
    pub fn set_down(&mut self, before: &[std::net::IpAddr], down: &[std::net::IpAddr]) -> Result<(), String> {
        use egret_bpf::templates::{GatewayLive, GatewaysDown};
        let map = self.bpf.map_mut(tables::GW_LIVE).ok_or("no map egret_gw_live")?;
        let mut m: aya::maps::HashMap<_, [u8; egret_bpf::layout::node_addr::SIZE], [u8; 4]> =
            aya::maps::HashMap::try_from(map).map_err(|e| e.to_string())?;
        for g in before {
            m.remove(&GatewayLive { gateway: *g, down: true }.key()).map_err(|e| e.to_string())?;
        }
        for g in down {
            let e = GatewayLive { gateway: *g, down: true };
            m.insert(e.key(), e.value(), 0).map_err(|e| e.to_string())?;
        }
        let map = self.bpf.map_mut(tables::GW_DOWN).ok_or("no map egret_gw_down")?;
        let mut count: aya::maps::Array<_, [u8; 4]> = aya::maps::Array::try_from(map).map_err(|e| e.to_string())?;
        count.set(0, GatewaysDown { count: down.len() as u32 }.value(), 0).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Runs `frame` `repeat` times.
    pub fn run(&mut self, frame: &[u8], repeat: u32) -> Result<Ran, String> {
        let prog: &mut SchedClassifier = self
            .bpf
            .program_mut(codegen::PROGRAM)
            .ok_or("no program")?
            .try_into()
            .map_err(|e| format!("not a classifier: {e}"))?;
        let mut out = vec![0u8; frame.len() + 256];
        let ctx_in = [0u8; egret_bpf::skb::SKB_SIZE];
        let mut ctx_out = [0u8; egret_bpf::skb::SKB_SIZE];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| format!("test_run: {e:?}"))?;
        out.truncate(res.data_size_out as usize);
        let cb = egret_bpf::skb::off::CB as usize;
        Ok(Ran {
            retval: res.return_value as i32,
            cb0: u32::from_le_bytes([ctx_out[cb], ctx_out[cb + 1], ctx_out[cb + 2], ctx_out[cb + 3]]),
            frame: out,
        })
    }

    /// A counter summed over CPUs.
    pub fn counter(&self, map: &str, index: u32) -> Result<Counter, String> {
        let m: PerCpuArray<_, [u8; 16]> =
            PerCpuArray::try_from(self.bpf.map(map).ok_or_else(|| format!("no map {map}"))?)
                .map_err(|e| e.to_string())?;
        let values = m.get(&index, 0).map_err(|e| e.to_string())?;
        let mut total = Counter::default();
        for v in values.iter() {
            let c = Counter::from_bytes(v).ok_or("bad counter")?;
            total.packets += c.packets;
            total.bytes += c.bytes;
        }
        Ok(total)
    }
}
