//! The plugin binary against bad input, a missing agent, a refusing agent
//! and a serving one (a stand-in that answers as the agent does).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use egret_cni::protocol::{Op, Outcome, PROTOCOL, Request, Response, Selection};
use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_egret-cni");

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("egret-cni-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Scratch(d)
    }
    fn socket(&self) -> PathBuf {
        self.0.join("cni.sock")
    }
    fn selection(&self) -> PathBuf {
        self.0.join("selection.json")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A stand-in agent: answers every request with `answer(request)` and records it.
struct StandIn {
    requests: Arc<Mutex<Vec<Request>>>,
}

impl StandIn {
    fn start(socket: &Path, answer: fn(&Request) -> Outcome) -> StandIn {
        let listener = UnixListener::bind(socket).expect("bind");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        // ends with the test process (the listener's file goes with the scratch directory)
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    continue;
                }
                let request: Request = serde_json::from_str(&line).expect("the plugin sends a request");
                let mut out = serde_json::to_string(&Response::new(answer(&request))).expect("json");
                out.push('\n');
                log.lock().expect("log").push(request);
                let _ = (&stream).write_all(out.as_bytes());
            }
        });
        StandIn { requests }
    }
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("log").clone()
    }
}

fn admitted(_: &Request) -> Outcome {
    Outcome::Admitted { selected: true, generation: Some(2), detail: "attached".into() }
}

fn prev_result(ips: &[&str]) -> Value {
    let ips: Vec<Value> = ips.iter().map(|a| json!({"address": a, "interface": 1})).collect();
    json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "lk0", "mac": "02:0b:0a:f4:01:64"}, {"name": "eth0", "sandbox": "/run/netns/p"}],
        "ips": ips})
}

fn conf(s: &Scratch, prev: Option<Value>) -> Value {
    let mut c = json!({"cniVersion": "1.1.0", "name": "k8s", "type": "egret-cni",
        "socket": s.socket(), "selectionFile": s.selection(), "timeoutMs": 2000});
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c
}

struct Ran {
    code: i32,
    stdout: Value,
    text: String,
    stderr: String,
}

fn run(command: &str, namespace: &str, stdin: &str) -> Ran {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c0ffee")
        .env("CNI_NETNS", "/run/netns/p")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=web-0"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("exits");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An error object per the spec: `code` and `msg`, exit status nonzero.
fn assert_error(r: &Ran, code: u64, msg: &str) {
    assert_ne!(r.code, 0, "{}", r.text);
    assert_eq!(r.stdout["code"].as_u64(), Some(code), "{}", r.text);
    assert!(r.stdout["msg"].as_str().is_some_and(|m| m.contains(msg)), "{msg:?} not in {}", r.text);
    assert!(r.stdout["cniVersion"].is_string(), "{}", r.text);
}

#[test]
fn bad_input_is_an_error_object_and_asks_nothing_of_the_agent() {
    let s = Scratch::new("bad");
    let agent = StandIn::start(&s.socket(), admitted);
    let cases: [(&str, String, u64, &str); 6] = [
        ("malformed JSON", "{\"cniVersion\": ".into(), 6, "stdin is not JSON"),
        ("missing prevResult", conf(&s, None).to_string(), 7, "no prevResult"),
        (
            "unknown cniVersion",
            json!({"cniVersion": "0.3.1", "name": "k8s", "type": "egret-cni", "prevResult": prev_result(&["10.0.0.5/32"])}).to_string(),
            1,
            "cniVersion `0.3.1` is not supported",
        ),
        ("a pod with no IP", conf(&s, Some(prev_result(&[]))).to_string(), 100, "no IP address"),
        ("an address that is none", conf(&s, Some(prev_result(&["10.0.0.300/32"]))).to_string(), 6, "not one"),
        ("prevResult of another shape", conf(&s, Some(json!({"ips": 5}))).to_string(), 6, "not a CNI result"),
    ];
    for (what, stdin, code, msg) in &cases {
        for command in ["ADD", "CHECK"] {
            let r = run(command, "prod", stdin);
            assert_error(&r, *code, msg);
            println!("{command} with {what}: exit {}, {}", r.code, r.text);
        }
    }
    let r = run("ADD", "prod", &{
        let mut c = conf(&s, Some(prev_result(&["10.0.0.5/32"])));
        c["timeoutMs"] = json!("soon");
        c.to_string()
    });
    assert_error(&r, 7, "network configuration is invalid");
    assert!(agent.requests().is_empty(), "bad input reached the agent: {:?}", agent.requests());
    // and the same input without CNI_ARGS' pod: code 4, still nothing asked
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c0ffee")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf(&s, Some(prev_result(&["10.0.0.5/32"]))).to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("exits");
    let v: Value = serde_json::from_slice(&out.stdout).expect("an error object");
    assert_eq!((out.status.code(), v["code"].as_u64()), (Some(1), Some(4)), "{v}");
    assert!(agent.requests().is_empty());
}

#[test]
fn add_passes_prev_result_through_unchanged_once_the_agent_admits() {
    let s = Scratch::new("add");
    let agent = StandIn::start(&s.socket(), admitted);
    let prev = prev_result(&["10.244.1.100/32", "2001:db8:244:1::100/128"]);
    let r = run("ADD", "prod", &conf(&s, Some(prev.clone())).to_string());
    assert_eq!(r.code, 0, "{} {}", r.text, r.stderr);
    assert_eq!(r.stdout, prev, "prevResult unchanged");
    let asked = agent.requests();
    let Op::Admit(ep) = &asked[0].op else { panic!("{asked:?}") };
    assert_eq!((asked[0].version, ep.namespace.as_str(), ep.name.as_str()), (PROTOCOL, "prod", "web-0"));
    assert_eq!(ep.host_interface.as_deref(), Some("lk0"));
    assert_eq!(ep.ips.len(), 2);
    // CHECK prints nothing on success; DEL and GC release; VERSION and STATUS answer
    let r = run("CHECK", "prod", &conf(&s, Some(prev.clone())).to_string());
    assert_eq!((r.code, r.text.as_str()), (0, ""), "{}", r.stderr);
    let r = run("DEL", "prod", &conf(&s, None).to_string());
    assert_eq!((r.code, r.text.as_str()), (0, ""));
    let mut gc = conf(&s, None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
    assert_eq!(run("GC", "prod", &gc.to_string()).code, 0);
    assert_eq!(run("STATUS", "prod", &conf(&s, None).to_string()).code, 0);
    let ops: Vec<String> =
        agent.requests().iter().map(|r| serde_json::to_value(&r.op).expect("json")["op"].to_string()).collect();
    assert_eq!(ops, ["\"admit\"", "\"check\"", "\"release\"", "\"gc\"", "\"ping\""]);
    let Op::Gc { valid_container_ids } = &agent.requests()[3].op else { panic!() };
    assert_eq!(valid_container_ids, &["a"]);
    let v = run("VERSION", "prod", "");
    assert_eq!(v.stdout["supportedVersions"], json!(["1.0.0", "1.1.0"]));
}

#[test]
fn without_the_agent_a_selectable_pod_fails_closed_naming_the_socket_and_others_pass() {
    let s = Scratch::new("down");
    let prev = prev_result(&["10.244.1.100/32"]);
    // no summary either: every pod might be selected
    let r = run("ADD", "prod", &conf(&s, Some(prev.clone())).to_string());
    assert_error(&r, 11, &s.socket().display().to_string());
    assert!(r.stdout["msg"].as_str().is_some_and(|m| m.contains("cannot be known")), "{}", r.text);
    assert_error(&run("STATUS", "prod", &conf(&s, None).to_string()), 50, "no selection summary");
    let summary = Selection {
        version: PROTOCOL,
        node: "w1".into(),
        namespaces: ["prod".to_owned()].into(),
        any_namespace: false,
    };
    summary.write(&s.selection()).expect("summary");
    let r = run("ADD", "prod", &conf(&s, Some(prev.clone())).to_string());
    assert_error(&r, 11, &s.socket().display().to_string());
    assert!(r.stdout["details"].as_str().is_some_and(|d| d.contains("failOpen")), "{}", r.text);
    // a namespace no policy could select: admitted, prevResult through
    let r = run("ADD", "batch", &conf(&s, Some(prev.clone())).to_string());
    assert_eq!((r.code, &r.stdout), (0, &prev), "{}", r.stderr);
    // fail-open: admitted with a note on stderr
    let mut open = conf(&s, Some(prev.clone()));
    open["failOpen"] = json!(true);
    let r = run("ADD", "prod", &open.to_string());
    assert_eq!((r.code, &r.stdout), (0, &prev));
    assert!(r.stderr.contains("failOpen"), "{}", r.stderr);
    // DEL and STATUS (with a summary) succeed without the agent
    assert_eq!(run("DEL", "prod", &conf(&s, None).to_string()).code, 0);
    assert_eq!(run("STATUS", "prod", &conf(&s, None).to_string()).code, 0);
}

#[test]
fn an_agent_that_refuses_fails_the_add_unless_fail_open() {
    let s = Scratch::new("refuse");
    let _agent = StandIn::start(&s.socket(), |_| Outcome::Refused { message: "the node's last sync failed".into() });
    let prev = prev_result(&["10.244.1.100/32"]);
    assert_error(&run("ADD", "prod", &conf(&s, Some(prev.clone())).to_string()), 101, "last sync failed");
    let mut open = conf(&s, Some(prev.clone()));
    open["failOpen"] = json!(true);
    assert_eq!(run("ADD", "prod", &open.to_string()).code, 0);
}
