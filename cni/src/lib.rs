//! egret-cni: closing the leak window of a new pod.
//!
//! A pod that an egress policy selects must not send one packet from the
//! node's address. The agent's watch ([`egret-runtime`'s `kube_agent`]) sees a
//! new pod only after the API server has its IP, which is after the pod's
//! containers may have started; the CNI `ADD` call comes before they start.
//! `egret-cni` is a *chained* CNI plugin (it runs after the cluster's own
//! CNI, which created the pod's interface and addresses): on `ADD` it asks
//! the node's agent, over a local Unix socket, to admit the endpoint, and
//! returns only when the agent says the node's dataplane holds the pod's
//! decision (the classifier attached to the pod's host-side veth, the
//! generation that knows the pod serving).
//!
//! What this crate owns:
//! - [`protocol`]: the request/response protocol on the agent's socket
//!   (versioned JSON lines, one request per connection) and the selection
//!   summary the agent publishes for when it is down; the client side
//!   ([`protocol::call`]). The agent (`egret-runtime`) serves it with the
//!   same types.
//! - [`spec`]: what the CNI specification (1.0, 1.1) defines that the
//!   plugin reads and writes: the network configuration, `CNI_*`
//!   environment, `prevResult`, error objects and their codes.
//! - [`plugin`]: the plugin's commands (`ADD`, `DEL`, `CHECK`, `VERSION`,
//!   `STATUS`, `GC`) as a function from input to output, so tests run it
//!   without a process.
//! - [`install`]: putting the binary into the CNI bin directory and the
//!   plugin at the end of the cluster's conflist, and taking both out.

pub mod install;
pub mod plugin;
pub mod protocol;
pub mod spec;
