//! The mini-cluster driven through an API server (issue: the in-cluster
//! agent, "Must show"): egret-kube's in-process API server
//! (`egret_testkit::apiserver`, HTTPS with a bearer token) listens
//! in the server's namespace on [`API_SERVER`], serves the mini-cluster's
//! objects (its snapshot files, converted), and every node runs
//! `egret-agent --kube`. Labelling a pod through the API makes its next
//! connection leave through the egress IP; unlabelling it puts it back on
//! the normal path. Each API write's delay to the node's dataplane (the
//! swap, and the pod's veth attached or detached) is measured and printed
//! with its median and p99; the agents' own figure
//! (`egret_event_to_dataplane_seconds`) is read from `/metrics`. Then a
//! DaemonSet update, node by node (worker-1, gateway-1): the agent killed,
//! a connection through the gateway still answered without it, the new
//! agent adopting the pinned generation (no swap), the same egress IP and
//! NAT port before, between and after.
//!
//! `EGRET_E2E_KUBE_EVENTS=N` sets the number of label changes (default 20).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::apiserver::Res;
use egret_bpf::artifact::AttachPoint;
use egret_loader::inspect;
use egret_testkit::minicluster::{EGRESS_IP, MiniCluster, SERVER, Source};
use serde_json::Value;

use super::{AGENT, Leftovers, node_ip, privileged};

/// Pod veth attachments on a node and its running generation.
fn dataplane(root: &Path) -> Option<(inspect::Status, usize)> {
    let s = inspect::status(root).ok()?;
    let pods = s.attachments.iter().filter(|a| a.attach == AttachPoint::PodVethIngress).count();
    Some((s, pods))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[test]
fn through_the_api_server_labelling_a_pod_moves_its_next_connection_to_the_egress_ip() {
    if !privileged("through_the_api_server_labelling_a_pod_moves_its_next_connection_to_the_egress_ip") {
        return;
    }
    let events: usize = std::env::var("EGRET_E2E_KUBE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut c = MiniCluster::prepare("e2ek").expect("the mini-cluster's network");
    let leftovers = Leftovers::of(&c);

    // the API server, bound in the server's namespace, served from this process
    let served = crate::kubecluster::serve(&c, "e2ek").expect("the API server");
    let (server, objects, kubeconfig) = (&served.server, &served.objects, served.kubeconfig.clone());
    let started = c.start_agents(Path::new(AGENT), Source::Kube { kubeconfig: &kubeconfig });
    if let Err(e) = started {
        panic!("every agent serves its node from the API server: {e}");
    }

    // plain-1 (worker-1) is not selected: the normal path, the node's address
    let worker = node_ip("worker-1");
    assert_eq!(c.tcp_request("plain-1", SERVER).expect("plain-1").ip, worker);
    assert_eq!(c.tcp_request("egress-1", SERVER).expect("egress-1").ip, EGRESS_IP);

    let (_, original) = objects
        .iter()
        .find(|(r, o)| *r == Res::Pods && o["metadata"]["name"] == "plain-1")
        .cloned()
        .expect("plain-1 in the snapshot");
    let mut labelled = original.clone();
    labelled["metadata"]["labels"]["use-egress-gateway"] = Value::String("true".into());
    let root = c.bpffs_root("worker-1");
    let (mut to_swap, mut to_attach) = (Vec::new(), Vec::new());
    for i in 0..events {
        let select = i % 2 == 0;
        let (before, _) = dataplane(&root).expect("status");
        let before = before.running;
        // worker-1 attaches its selected pods: egress-1, and plain-1 when labelled
        let want_pods = if select { 2 } else { 1 };
        let written = Instant::now();
        server.apply(Res::Pods, if select { labelled.clone() } else { original.clone() });
        let mut swapped = None;
        loop {
            // (a status read can race with the swap deleting the old generation: retried)
            if let Some((s, pods)) = dataplane(&root) {
                if swapped.is_none() && s.running != before {
                    swapped = Some(written.elapsed());
                }
                if swapped.is_some() && pods == want_pods {
                    break;
                }
            }
            assert!(written.elapsed() < Duration::from_secs(10), "event {i}: worker-1 did not follow the API");
            std::thread::sleep(Duration::from_millis(1));
        }
        to_swap.push(swapped.expect("swapped"));
        to_attach.push(written.elapsed());
        // the next connection follows the label
        let seen = c.tcp_request("plain-1", SERVER).expect("plain-1 after the change");
        assert_eq!(seen.ip, if select { EGRESS_IP } else { worker }, "event {i} (labelled: {select})");
    }
    let (_, body) = c.agent_http("worker-1", "/metrics").expect("worker-1 metrics");
    let agent_figure = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (sum, count) =
        (agent_figure("egret_event_to_dataplane_seconds_sum"), agent_figure("egret_event_to_dataplane_seconds_count"));
    assert!(count >= events as f64, "the agent measured every swap it made: {count} < {events}");
    for (what, v) in [("API write → swap", &mut to_swap), ("API write → swap and pod (de)attached", &mut to_attach)]
    {
        v.sort();
        println!(
            "{what}, {events} label changes: median {}, p90 {}, p99 {}, max {}",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(percentile(v, 0.99)),
            ms(percentile(v, 1.0)),
        );
    }
    println!(
        "worker-1's own figure (first watch event of a batch → apply done): mean {} over {count} swaps, {} within 100 ms",
        ms(Duration::from_secs_f64(sum / count)),
        agent_figure("egret_event_to_dataplane_seconds_bucket{le=\"0.1\"}"),
    );
    // every policy has its Event, from its reporter
    assert!(
        server.events().iter().any(|e| e["regarding"]["name"] == "egress-gateway-policy" && e["reason"] == "Compiled"),
        "{:#?}",
        server.events()
    );

    // a DaemonSet update, node by node: the old agent killed, the new one
    // started; an open connection through the gateway keeps its egress IP
    // and NAT port throughout, and the new agents adopt the pinned
    // generations (no swap)
    let mut conn = c.tcp_connect("egress-1", SERVER).expect("a long-lived connection");
    let opened = conn.exchange("before").expect("exchange");
    assert_eq!(opened.ip, EGRESS_IP);
    for node in ["worker-1", "gateway-1"] {
        let serving = c.generation(node).expect("serving");
        c.stop_agent(node).expect("stop");
        assert_eq!(conn.exchange("agentless").expect("no agent: the pinned dataplane forwards"), opened);
        c.start_agent_again(node).expect("the new agent serves");
        assert_eq!(c.generation(node), Some(serving), "{node}: the new agent adopted generation {serving:?}");
        let said = c.agent_output(node);
        assert!(
            said.iter().any(|l| l == &format!("unchanged generation {}", serving.0)),
            "{node}: adopted, not rebuilt: {said:?}"
        );
        assert_eq!(conn.exchange("after").expect("after the update"), opened, "{node}");
    }
    drop(c);
    drop(served);
    leftovers.assert_gone();
    assert!(!kubeconfig.exists());
}
