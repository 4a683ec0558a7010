//! `StateMap` on real pinned maps (privileged, on a private bpffs): a state
//! pin that is absent opens as `None`; a pinned map of the definition's
//! geometry is read, written, listed and deleted by whole entries; a map of
//! another geometry or a per-CPU map is refused with the reason; a map
//! re-pinned under the same name has another id.

use egret_testkit::netns as common;

use egret_testkit::pinned_maps;

use std::io;
use std::net::Ipv4Addr;

use common::*;
use egret_bpf::templates::GatewayLive;
use egret_bpf::templates::probe::ProbeRx;
use egret_bpf::{MapDef, MapKind};
use egret_loader::{PinLayout, StateMap, StateMapError};

#[test]
fn state_maps_open_by_name_and_are_read_written_and_deleted_by_entry() {
    if !privileged("state_maps_open_by_name_and_are_read_written_and_deleted_by_entry") {
        return;
    }
    let fs = Bpffs::new("sa");
    let layout = PinLayout::new(fs.root());
    let state = layout.state_dir();
    // before the directory exists, and with it empty: nothing pinned
    assert!(StateMap::open(&layout, &GatewayLive::map_def()).expect("absent is fine").is_none());
    std::fs::create_dir_all(&state).expect("state dir");
    assert!(StateMap::open(&layout, &ProbeRx::map_def()).expect("absent is fine").is_none());

    pinned_maps::create_pinned(&state, &[GatewayLive::map_def()]);
    let live = StateMap::open(&layout, &GatewayLive::map_def()).expect("opens").expect("pinned");
    assert_eq!(live.name(), "egret_gw_live");
    let down = GatewayLive { gateway: Ipv4Addr::new(192, 0, 2, 13).into(), down: true };
    assert_eq!(live.get(&down.key()).expect("lookup"), None);
    live.set(&down.key(), &down.value()).expect("update");
    let value = live.get(&down.key()).expect("lookup").expect("present");
    assert_eq!(GatewayLive::from_bytes(&down.key(), &value), Some(down));
    let other = GatewayLive { gateway: Ipv4Addr::new(192, 0, 2, 14).into(), down: false };
    live.set(&other.key(), &other.value()).expect("update");
    let mut keys = live.keys().expect("keys");
    keys.sort();
    let mut want = vec![down.key().to_vec(), other.key().to_vec()];
    want.sort();
    assert_eq!(keys, want);
    live.remove(&down.key()).expect("delete");
    live.remove(&down.key()).expect("deleting an absent key is fine");
    assert_eq!(live.keys().expect("keys"), vec![other.key().to_vec()]);
    // a key of the wrong size never reaches the kernel
    match live.set(&[1, 2, 3], &down.value()) {
        Err(StateMapError::Access { operation: "update", source, .. }) => {
            assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
        }
        other => panic!("expected an invalid-input access error, got {other:?}"),
    }

    // the same name, another map: another id
    let first = live.id();
    drop(live);
    std::fs::remove_file(layout.state_map("egret_gw_live")).expect("unpin");
    pinned_maps::create_pinned(&state, &[GatewayLive::map_def()]);
    let again = StateMap::open(&layout, &GatewayLive::map_def()).expect("opens").expect("pinned");
    assert_ne!(again.id(), first);
    assert_eq!(again.keys().expect("keys"), Vec::<Vec<u8>>::new(), "a new map is empty");

    // a map under the probe map's name with another value size, and a per-CPU one
    let mut wrong = ProbeRx::map_def();
    wrong.value_size = 16;
    let percpu = MapDef::new("percpu_live", MapKind::PercpuHash, 4, 4, 16).expect("def");
    pinned_maps::create_pinned(&state, &[wrong, percpu.clone()]);
    match StateMap::open(&layout, &ProbeRx::map_def()) {
        Err(StateMapError::Geometry { map, reason }) => {
            assert_eq!((map.as_str(), reason.as_str()), ("egret_probe_rx", "value_size 16 -> 24"));
        }
        other => panic!("expected a geometry error, got {other:?}"),
    }
    assert!(matches!(StateMap::open(&layout, &percpu), Err(StateMapError::PerCpu { .. })));
    drop(again);
    let mount = fs.mount_point().to_path_buf();
    drop(fs);
    assert!(!mounted(&mount) && !mount.exists(), "the bpffs mount is gone with every pin");
}
