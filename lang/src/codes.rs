//! Every diagnostic code egret can emit, defined once.
//!
//! `E` codes are errors, `W` codes warnings. Numbering: `00xx` input and syntax,
//! `01xx` policy fields, `02xx` policy-set semantics, `03xx` checks against a
//! cluster snapshot, `04xx` compilation. Each code has a doc (what it means,
//! why it matters, an example, the fix) printed by `egret rule CODE`.
//! Codes are stable: never renumber or reuse one.

use crate::diag::Severity;

/// A diagnostic code and its documentation.
#[derive(Debug, PartialEq, Eq)]
pub struct Code {
    /// Stable identifier, e.g. `E0102`.
    pub id: &'static str,
    /// Short kebab-case name, e.g. `unknown-field`.
    pub name: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// One line: what it means.
    pub summary: &'static str,
    /// Why it matters, an example and the fix.
    pub doc: &'static str,
}

macro_rules! codes {
    ($( $(#[$m:meta])* $konst:ident = $id:literal, $name:literal, $sev:ident, $summary:literal, $doc:literal; )*) => {
        $( $(#[$m])* pub static $konst: Code = Code { id: $id, name: $name, severity: Severity::$sev, summary: $summary, doc: $doc }; )*
        /// All codes, in numbering order.
        pub static ALL: &[&Code] = &[ $( &$konst, )* ];
    };
}

codes! {
    IO = "E0001", "unreadable-input", Error,
    "an input file or directory could not be read",
    "egret could not open or read a path given on the command line, or a file is not UTF-8.\n\nFix: check the path and permissions; save the file as UTF-8.";

    YAML_SYNTAX = "E0002", "yaml-syntax", Error,
    "the file is not valid YAML",
    "The YAML parser stopped at the marked position. Nothing in this document is checked further.\n\nExample:\n    spec:\n      selectors:\n      - podSelector: {matchLabels: {app: web}\n\nFix: correct the syntax at the marked position (a missing `}` above).";

    EGRET_SYNTAX = "E0003", "egret-syntax", Error,
    "the file is not valid `.egret` syntax",
    "The `.egret` parser stopped at the marked position.\n\nExample:\n    policy web {\n      select pods(app = web\n    }\n\nFix: correct the syntax at the marked position (a missing `)` above). `egret fmt` prints the canonical form of a valid file.";

    NOT_AN_OBJECT = "E0004", "not-a-kubernetes-object", Error,
    "a YAML document is not a Kubernetes object",
    "Every YAML document must be a mapping with `apiVersion` and `kind` (or `kind: List` with `items`).\n\nFix: add `apiVersion` and `kind`, or remove the document.";

    YAML_UNSUPPORTED = "E0005", "yaml-unsupported", Error,
    "the YAML uses a feature egret does not read (aliases, non-scalar keys, duplicate keys)",
    "egret reads plain Kubernetes manifests. Anchors and aliases, complex keys and duplicate keys make a manifest mean different things to different tools (the API server rejects duplicate keys).\n\nFix: write the value out in full; remove the duplicate key.";

    CONFIG = "E0006", "invalid-config", Error,
    "the egret config file (`.egret.yaml`) is not valid",
    "The config file holds suppressions: `ignore:`, a list of codes (`- W0203`) or of `{code: W0203, paths: [dir/]}` entries (the code only in files under those path prefixes). An unknown key or code is an error, so a typo never silently keeps a suppression from working.\n\nExample:\n    ignore:\n    - W9999\n\nFix: name an existing code (`egret rule` lists them).";

    INPUT_TOO_LARGE = "E0007", "input-too-large", Error,
    "an input file, or all inputs of one run together, exceed egret's size limit",
    "egret reads at most 16 MiB per file and 256 MiB per run (YAML, `.egret`, standard input), so a wrong path such as `/dev/zero` or a runaway generated file ends with this error instead of exhausting memory. The limits are set with the environment variables `EGRET_MAX_FILE_BYTES` and `EGRET_MAX_INPUT_BYTES` (bytes).\n\nExample: `egret lint policies/huge.yaml` where the file holds 40 MiB.\n\nFix: split the file, pass only the files meant, or raise the limit: `EGRET_MAX_FILE_BYTES=67108864 egret lint ...`.";

    NOT_A_REGULAR_FILE = "E0008", "not-a-regular-file", Error,
    "a path named on the command line is not a regular file or directory",
    "egret reads regular files and directories only. A FIFO, socket or device (`/dev/zero`, `/dev/stdin` as a path) could block forever or never end.\n\nExample: `egret lint /dev/zero`.\n\nFix: name the file or directory that holds the manifests; use `-` for standard input.";

    SKIPPED_SPECIAL_FILE = "W0009", "skipped-special-file", Warning,
    "an entry of an input directory is not a regular file and was not read",
    "While walking a directory egret reads regular files and follows symbolic links to them (each file once, however many links lead to it, and a directory reached again through a link loop is not walked twice). FIFOs, sockets and devices are skipped with this warning, so a stray pipe never makes a run hang.\n\nExample: `mkfifo policies/pipe.yaml`.\n\nFix: remove the entry from the directory, or ignore the warning.";

    MISSING_FIELD = "E0101", "missing-field", Error,
    "a required field is missing or empty",
    "CiliumEgressGatewayPolicy requires `metadata.name`, `spec.selectors` (at least one), `spec.destinationCIDRs` (at least one) and a gateway (`spec.egressGateway` with a `nodeSelector`, or `spec.egressGateways`).\n\nExample:\n    spec:\n      destinationCIDRs: [\"0.0.0.0/0\"]\n      egressGateway: {nodeSelector: {matchLabels: {egress: \"true\"}}}\n\nFix: add the field (`selectors` above).";

    UNKNOWN_FIELD = "E0102", "unknown-field", Error,
    "a field that the resource does not have",
    "The API server drops unknown fields (or rejects them with strict validation), so what you wrote has no effect. The article this project grew from writes `spec.selector`; the CRD field is `spec.selectors`, a list.\n\nExample:\n    spec:\n      selector:\n        matchLabels: {app: web}\n\nFix:\n    spec:\n      selectors:\n      - podSelector:\n          matchLabels: {app: web}";

    WRONG_TYPE = "E0103", "wrong-type", Error,
    "a field has the wrong type (mapping, list or scalar)",
    "Example: `destinationCIDRs: 0.0.0.0/0` is a string where a list is required; `name: 12` or `apiVersion: 2` is a number where the API server requires a string (it refuses the object).\n\nFix: `destinationCIDRs: [\"0.0.0.0/0\"]`; quote the number: `name: \"12\"`.";

    CLUSTER_SCOPED_NAMESPACE = "E0104", "namespace-on-cluster-scoped", Error,
    "(retired: see W0123) `metadata.namespace` on a cluster-scoped resource",
    "CiliumEgressGatewayPolicy is cluster-scoped. A namespace in its metadata does not restrict the policy to that namespace (kubectl rejects or ignores it), so a policy written to affect one namespace affects pods in all of them.\n\nFix: remove `metadata.namespace` and select the namespace in each selector: `namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: production}}`.";

    INVALID_CIDR = "E0105", "invalid-cidr", Error,
    "a CIDR is not a valid IPv4 or IPv6 prefix",
    "Example: `10.0.0.0/33`, `10.0.0/8`, `10.0.0.0`.\n\nFix: write an address, a slash and a prefix length valid for its family: `10.0.0.0/8`.";

    CIDR_HOST_BITS = "E0106", "cidr-host-bits", Error,
    "a CIDR has bits set after its prefix length",
    "`10.0.0.1/8` is read by some tools as `10.0.0.0/8` and rejected by others; what was meant is ambiguous.\n\nFix: write the network address, `10.0.0.0/8`, or a host route, `10.0.0.1/32`.";

    INVALID_IP = "E0107", "invalid-ip", Error,
    "an IP address is not valid",
    "Example: `egressIP: 192.168.1.300`.\n\nFix: write a valid IPv4 or IPv6 address.";

    EGRESS_IP_AND_INTERFACE = "E0108", "egress-ip-and-interface", Error,
    "a gateway sets both `egressIP` and `interface`",
    "At most one of `egressIP` and `interface` may be set: the egress IP either is given or is taken from the interface.\n\nFix: keep one of them.";

    EMPTY_SELECTOR_ITEM = "E0109", "empty-selector-item", Error,
    "a selector item has neither `podSelector` nor `namespaceSelector`",
    "Each item of `spec.selectors` must say which pods it selects.\n\nFix: add `podSelector: {}` to select every pod, or a `namespaceSelector`.";

    TOO_MANY_GATEWAYS = "E0110", "too-many-gateways", Error,
    "more than 64 `egressGateways`",
    "The CRD allows at most 64 gateways per policy.\n\nFix: split the policy.";

    INVALID_LABEL_KEY = "E0111", "invalid-label-key", Error,
    "a label key is not a valid Kubernetes label key",
    "A key is an optional DNS-subdomain prefix (at most 253 characters) and `/`, then a name of at most 63 characters of `[A-Za-z0-9._-]` that starts and ends with an alphanumeric.\n\nFix: e.g. `app.kubernetes.io/name`.";

    INVALID_LABEL_VALUE = "E0112", "invalid-label-value", Error,
    "a label value is not a valid Kubernetes label value",
    "A value is empty or at most 63 characters of `[A-Za-z0-9._-]` starting and ending with an alphanumeric. YAML reads unquoted `true`, `yes`, `1` as non-strings: quote them.\n\nFix: `use-egress-gateway: \"true\"`.";

    INVALID_OPERATOR = "E0113", "invalid-selector-requirement", Error,
    "a matchExpressions requirement has an unknown operator or wrong values",
    "Operators are `In`, `NotIn` (with at least one value), `Exists` and `DoesNotExist` (with no values).\n\nFix: e.g. `{key: tier, operator: In, values: [payments]}`.";

    DUPLICATE_NAME = "E0114", "duplicate-name", Error,
    "two objects of the same kind have the same name",
    "Policies are identified by name (names also break ties); cluster objects by namespace and name. Only one of the two can exist in a cluster.\n\nFix: rename or remove one.";

    INVALID_NAME = "E0115", "invalid-name", Error,
    "`metadata.name` is not a valid DNS subdomain",
    "Names are at most 253 characters of lowercase alphanumerics, `-` and `.`, starting and ending with an alphanumeric.\n\nFix: e.g. `egress-payments`.";

    LABEL_KEY_NOT_ON_PODS = "W0116", "label-key-not-on-pods", Warning,
    "a pod selector requires a key that pods do not carry as a label",
    "Pod selectors match pod *labels*. Keys such as `namespace` or `name` are object fields, not labels, so a requirement like `{key: namespace, operator: In, values: [production]}` matches no pod (the article's \"restricted-gateway\" example). With a snapshot egret also checks that some pod or workload carries the key.\n\nFix: use the pseudo-label `io.kubernetes.pod.namespace` or a `namespaceSelector` on `kubernetes.io/metadata.name`.";

    GATEWAY_IGNORED = "W0117", "egress-gateway-ignored", Warning,
    "`egressGateway` is ignored because `egressGateways` is set",
    "When `egressGateways` is non-empty, `egressGateway` has no effect.\n\nFix: move the gateway into `egressGateways` or delete it.";

    INVALID_FLOATING_ANNOTATION = "E0118", "invalid-floating-annotation", Error,
    "the `egret.dev/floating-egress-ip` annotation has a value other than `\"true\"`",
    "The annotation `egret.dev/floating-egress-ip: \"true\"` on a CiliumEgressGatewayPolicy makes every `egressIP` of its gateway entries floating: any node the entry's nodeSelector matches may hold it, one at a time (docs/FAILOVER.md). Any other value is a mistake egret will not guess at (annotation values are strings: `true` unquoted is a YAML boolean).\n\nExample:\n    metadata:\n      annotations:\n        egret.dev/floating-egress-ip: \"yes\"\n\nFix: write `\"true\"`, or remove the annotation for a fixed egress IP.";

    FLOATING_IPV6 = "E0119", "floating-ipv6", Error,
    "a floating egress IP is an IPv6 address",
    "Floating egress IPs are IPv4 only for now: an IPv6 address cannot move between gateways yet (egret announces a moved address with gratuitous ARP and sends no unsolicited IPv6 neighbour advertisements).\n\nExample:\n    via nodes(egress = true) floating ip 2001:db8::50\n\nFix: float an IPv4 address, or drop `floating` (the annotation) and use a fixed IPv6 egress IP.";

    FLOATING_MIXED = "E0120", "floating-mixed", Error,
    "some `via … ip` lines of a policy are floating and others are not",
    "In a CiliumEgressGatewayPolicy the opt-in is one annotation for the whole policy: it makes every `egressIP` of the policy floating. A `.egret` policy that floats some of its egress IPs and not others cannot be written as a CRD (`egret convert` would change its meaning).\n\nExample:\n    via nodes(zone = a) floating ip 198.51.100.50\n    via nodes(zone = b) ip 198.51.100.51\n\nFix: write `floating` on every `via … ip` line of the policy, or on none (or split the policy).";

    UNSERVED_API_VERSION = "E0121", "unserved-api-version", Error,
    "a CiliumEgressGatewayPolicy with an apiVersion Cilium does not serve",
    "Cilium's CRD serves `CiliumEgressGatewayPolicy` as `cilium.io/v2` only: the API server rejects any other version (`cilium.io/v2alpha1`, `cilium.io/v3`, a bare `v2alpha1`), so the policy never reaches a cluster.\n\nExample:\n    apiVersion: cilium.io/v2alpha1\n    kind: CiliumEgressGatewayPolicy\n\nFix: `apiVersion: cilium.io/v2`.";

    CIDR_HOST_BITS_MASKED = "W0122", "cidr-host-bits-masked", Warning,
    "a CIDR of a CiliumEgressGatewayPolicy has bits set after its prefix length",
    "Cilium's API server accepts `52.1.2.3/8` (the CRD's `format: cidr`) and its agent keys the egress map by the prefix, so Cilium reads it as `52.0.0.0/8`; egret compiles it the same way. It is probably a mistake: either the network (`52.0.0.0/8`) or a host route (`52.1.2.3/32`) was meant. (In `.egret`, egret's own language, the same CIDR is an error, E0106.)\n\nFix: write the network address, or `/32` (`/128`) for one address.";

    NAMESPACE_DROPPED = "W0123", "namespace-dropped", Warning,
    "`metadata.namespace` on the cluster-scoped CiliumEgressGatewayPolicy",
    "The API server accepts the object and drops the namespace (the kind is cluster-scoped), so the policy applies to pods in every namespace its selectors match, not only in that one; Cilium and egret read it so.\n\nFix: remove `metadata.namespace`; to restrict the policy to a namespace, add `namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: NAME}}` to each selector item.";

    EMPTY_LIST_NO_EFFECT = "W0124", "empty-list-no-effect", Warning,
    "`spec.selectors` or `spec.destinationCIDRs` is an empty list",
    "Cilium's CRD requires the fields but not that they have items, and its agent accepts `[]`: a policy without selector items selects no pod, one without destinations captures no traffic. The policy does nothing, in Cilium and in egret.\n\nFix: add the items, or delete the policy.";

    SELECTOR_MATCHES_NOTHING = "W0125", "selector-matches-nothing", Warning,
    "a label selector Cilium cannot build, so it matches nothing",
    "Cilium's API server does not check label keys, nor the values of `matchExpressions`; Cilium's agent then fails to build the selector (`unable to construct selector in label selector`) and an unbuildable selector matches no labels at all. So `In`/`NotIn` without values, `Exists`/`DoesNotExist` with values, or an invalid label key make the whole selector match nothing — even `NotIn` and `DoesNotExist`, which would otherwise match most pods. egret compiles it the same way. (In `.egret` the same selector is an error, E0111/E0113.)\n\nExample:\n    podSelector:\n      matchExpressions: [{key: tier, operator: NotIn}]\n\nFix: give `In`/`NotIn` at least one value; use a valid key (`[prefix/]name`).";

    EXCLUSION_NO_EFFECT = "W0201", "exclusion-without-effect", Warning,
    "an excluded CIDR lies outside every destination CIDR of its policy",
    "An excluded CIDR only removes addresses from its own policy's destinations (SEMANTICS.md, deliberate difference 2). One that overlaps none of them does nothing in egret.\n\nExample: destinations `52.0.0.0/8`, excluded `10.0.0.0/8`.\n\nFix: remove it, or add the destination it was meant to carve.";

    CONFLICT = "E0202", "conflict", Error,
    "two policies tie for an endpoint and destination with different gateways or egress IPs",
    "When several policies select the same endpoint and their longest matching destination prefixes are equal, egret picks the policy with the smallest name; Cilium picks one non-deterministically. Either way one policy's egress IP silently loses.\n\nFix: make the selectors disjoint, use a more specific destination in the policy that should win, or give both the same gateway and egress IP.";

    TIE = "W0203", "tie", Warning,
    "two policies tie for an endpoint and destination, with the same gateway and egress IP",
    "The tie is harmless today (both send traffic the same way) but becomes a conflict when one of them changes.\n\nFix: merge the policies or make the selectors disjoint.";

    SHADOWED = "W0204", "shadowed-policy", Warning,
    "a policy never wins for any endpoint and destination",
    "Every destination of this policy is taken, for every endpoint it selects, by other policies with longer prefixes or smaller names. It has no effect.\n\nFix: delete it, or narrow the policies that shadow it.";

    CILIUM_NODE_SELECTOR = "W0205", "cilium-reads-node-selector-differently", Warning,
    "Cilium pools `nodeSelector`s across selector items; egret pairs each with its item",
    "In Cilium, the `nodeSelector`s of all items of a policy are ORed together, detached from their items (SEMANTICS.md, deliberate difference 1). When some items have a nodeSelector and some do not, the two readings select different endpoints.\n\nFix: give every item the same nodeSelector, or split the policy.";

    CILIUM_EXCLUSION = "W0206", "cilium-reads-exclusion-differently", Warning,
    "an excluded CIDR overlaps another policy's destinations for the same endpoints",
    "In Cilium an excluded CIDR is a map entry that can shadow another policy's wider entry for the same source; in egret it only carves holes in its own policy (SEMANTICS.md, deliberate difference 2). For the overlap, Cilium sends the traffic the normal way; egret sends it through the other policy's gateway.\n\nFix: add the exclusion to the other policy too if the traffic must not go through a gateway.";

    EGRESS_IP_FAMILY_WITHOUT_DESTINATIONS = "W0207", "egress-ip-family-without-destinations", Warning,
    "an `egressIP` is of an address family none of the policy's destination CIDRs has",
    "An `egressIP` only says where traffic of its own family leaves from. For a policy whose destinations are all of the other family, egret sends that traffic from the gateway's first (non-link-local) address of the destinations' family on the interface holding the egress IP, or drops it there (`no-egress-ip`) when the interface has none: the address you wrote is never used. Cilium (1.20, which accepts an IPv6 `egressIP`) refuses such a policy (`IPv4 egress IP … cannot be used with only IPv6 destination CIDRs`): it programs no entries, so the pods' traffic leaves the normal way, not through a gateway (`egret compile --emit cilium` lists the policy as refused).\n\nExample:\n    destinationCIDRs: [\"2001:db8:99::/48\"]\n    egressGateway: {nodeSelector: {matchLabels: {egress: \"true\"}}, egressIP: 198.51.100.10}\n\nFix: write the address to leave from, of the destinations' family, as `egressIP` (an IPv6 one above), or name the interface with `interface`; for both families, give the policy destinations of both.";

    EXACT_OVERLAP = "W0208", "exclusion-equals-other-destination", Warning,
    "one policy excludes exactly the prefix another policy captures, for the same pods",
    "Cilium keys its egress map by (source IP, destination prefix). An excluded CIDR of one policy is an entry for that key, and an identical destination of another policy is an entry for the same key: Cilium writes both, and the last writer wins, which depends on the order Cilium happened to process the policies. egret sends the traffic through the capturing policy (an exclusion only carves holes in its own policy), so egret and Cilium may disagree, and Cilium may disagree with itself after a restart.\n\nExample: policy A captures `10.0.0.0/8` excluding `10.1.0.0/16`; policy B captures `10.1.0.0/16`, for the same pods.\n\nFix: decide which is meant: drop the exclusion from A (B's gateway), or B's destination (the normal route).";

    SELECTS_NOTHING = "W0301", "selects-nothing", Warning,
    "the policy selects no pod or workload in the snapshot",
    "No running pod and no workload template in the snapshot matches any selector item, so the policy does nothing (yet).\n\nFix: check the pod labels and the namespace selector; `egret explain` shows why a given pod is not selected.";

    NO_GATEWAY_NODE = "E0302", "no-gateway-node", Error,
    "the gateway nodeSelector matches no node with an InternalIP",
    "When no gateway resolves, the selected pods' traffic to the policy's destinations is dropped (fail closed, drop reason `no-gateway`), in egret as in Cilium.\n\nFix: label the gateway node (`kubectl label node NAME cilium.io/egress-gateway=true`) or fix the selector.";

    SEVERAL_GATEWAY_NODES = "W0303", "several-gateway-nodes", Warning,
    "the gateway nodeSelector matches several nodes, but only the first by name is used",
    "`egressGateway` resolves to exactly one node. Labelling several nodes does not give high availability.\n\nFix: list each gateway under `egressGateways` (egret spreads endpoints across them and fails over when one is not Ready).";

    NAMESPACE_LABEL_UNKNOWN = "W0304", "namespace-label-unknown", Warning,
    "a namespaceSelector uses a label no namespace in the snapshot has",
    "The article selects `name: production`; namespaces do not carry a `name` label unless someone adds it. The API server sets `kubernetes.io/metadata.name` on every namespace.\n\nFix: `namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: production}}`.";

    DESTINATION_CLUSTER_INTERNAL = "W0305", "destination-cluster-internal", Warning,
    "a destination CIDR overlaps cluster-internal ranges",
    "Traffic to pod CIDRs, node IPs and the service CIDR never goes to a gateway, whatever the policy says, so that part of the destination has no effect. Default routes (`0.0.0.0/0`, `::/0`) are not reported: they plainly mean \"everything outside the cluster\".\n\nFix: exclude the cluster ranges explicitly (for readers) or narrow the destination.";

    EGRESS_IP_NOT_ON_NODE = "E0306", "egress-ip-not-on-node", Error,
    "the egressIP is not configured on any interface of the gateway node",
    "The gateway can only send from an address it holds. Without it the gateway drops the traffic (drop reason `no-egress-ip`).\n\nFix: `ip addr add EGRESS_IP/32 dev IFACE` on the gateway node (and make it persistent), or fix the policy.";

    INTERFACE_NOT_ON_NODE = "E0307", "interface-not-on-node", Error,
    "the gateway interface does not exist on the gateway node",
    "With `interface`, the egress IP is the first address of that interface. When the interface is missing, no egress IP can be resolved and the gateway drops the traffic (`no-egress-ip`).\n\nFix: name an interface the node has (by name or altName).";

    DANGLING_REFERENCE = "W0308", "dangling-reference", Warning,
    "a snapshot object refers to an object the snapshot does not contain",
    "Example: a pod whose `spec.nodeName` names no Node, a pod in a namespace with no Namespace object, or a NodeNetwork for an unknown node. egret treats the missing object as having no labels.\n\nFix: include the object in the snapshot (`kubectl get nodes,namespaces,pods -A -o yaml`).";

    INVALID_OBJECT = "W0309", "invalid-snapshot-object", Warning,
    "a snapshot object has an invalid or unusable field and is partly ignored",
    "Example: a pod IP that is not an address, a node without InternalIP used as a gateway.\n\nFix: regenerate the snapshot with `kubectl get -o yaml`.";

    FLOATING_CANDIDATES_DIFFER = "E0310", "floating-ip-candidates-differ", Error,
    "one floating egress IP is claimed by policies whose candidate nodes differ",
    "Every node that may hold a floating egress IP serves one shared slot for it and forwards its traffic to the current holder, so all policies that float the same IP must agree on which nodes may hold it. When they do not, egret cannot tell which nodes are candidates: the floating gateway entries of every policy claiming the IP resolve to no gateway and their traffic is dropped (`no-gateway`) rather than sent from the IP by a node that should not hold it. Other policies are not affected.\n\nExample: policy `a` floats 198.51.100.50 over nodes with `egress=true`, policy `b` floats it over nodes with `zone=a`.\n\nFix: give the policies the same gateway nodeSelector, or float different IPs.";

    FLOATING_IP_IS_NODE_ADDRESS = "E0311", "floating-ip-is-node-address", Error,
    "a floating egress IP is a fixed address of a node",
    "A floating egress IP is added to and removed from its current holder by egret (as a /32). A node whose facts hold it with a shorter prefix has it configured as its own, fixed address: two nodes would answer for it. The floating gateway entries claiming the IP resolve to no gateway and their traffic is dropped (`no-gateway`).\n\nExample: node `gw-1` has `198.51.100.50/24` on `eth1` and a policy floats 198.51.100.50.\n\nFix: remove the address from the node's configuration (egret adds it where it is owned), or float another address.";

    EGRESS_IP_ON_ONE_NODE = "W0312", "egress-ip-on-one-node", Warning,
    "the policy's egress IP can only ever live on one node",
    "An explicit `egressIP` that is configured on at most one of the policy's gateway nodes cannot move: when that node fails, its endpoints fail over to another gateway and leave from another IP, so partners that allow-list the IP drop them and established connections break.\n\nExample: `egressIP: 198.51.100.50` with gateway nodes `gw-1` (which holds it) and `gw-2`.\n\nFix: make the IP floating: the annotation `egret.dev/floating-egress-ip: \"true\"` on the policy (`floating ip` in `.egret`); any gateway node the entry selects can then hold it.";

    NO_EGRESS_ADDRESS_FOR_FAMILY = "E0313", "no-egress-address-for-family", Error,
    "the gateway node has no address of a family the policy's destinations need",
    "A gateway sends a policy's traffic of each address family from an address of that family: the `egressIP` for its own family; for the other family, and with `interface` or the default route, the first non-link-local address of the family on that interface (SEMANTICS.md, \"Egress IP\"). When the interface has none, the gateway drops the policy's traffic of that family (drop reason `no-egress-ip`); the other family is not affected. Cilium programs the egress IP `::` (or `0.0.0.0`) for that family and its gateway drops the traffic too.\n\nExample: destinations `0.0.0.0/0` and `::/0`, `interface: eth1`, and `eth1` of the gateway node has only `198.51.100.10/24`.\n\nFix: add an address of that family to the interface (`ip -6 addr add 2001:db8::10/64 dev eth1`), use an interface that has one, or remove the policy's destinations of that family.";

    FLOATING_CANDIDATES_MIXED_FAMILIES = "W0314", "floating-candidates-mixed-families", Warning,
    "the candidates of a floating egress IP differ in the address families they can serve",
    "A floating egress IP is IPv4 (E0119). The policy's IPv6 traffic leaves from each candidate's own IPv6 address (the first non-link-local IPv6 address of the interface on the floating IP's subnet, else of the default-route interface): it does not float. When some candidates have such an address and others do not, what happens to the IPv6 traffic depends on which candidate owns the IP: the others drop it (`no-egress-ip`). A node the entry selects that has no IPv4 InternalIP is a candidate reached over an IPv6 underlay (W0316); while it owns the IPv4 floating IP, the policy's IPv4 traffic leaves it only if that node routes IPv4 on its egress interface. Cilium has no floating IPs: it reads the entry as a fixed `egressIP` on the first node by name.\n\nExample: a floating `198.51.100.50` for destinations `52.0.0.0/8` and `2001:db8:99::/48` over `gw-1` (IPv4 only) and `gw-2` (also `2001:db8:1::3/64`).\n\nFix: give every candidate an IPv6 address on the egress interface, select only dual-stack nodes, or send the IPv6 destinations through a policy of their own.";

    IPV6_UNDERLAY_GATEWAY = "W0316", "ipv6-underlay-gateway", Warning,
    "a gateway node has no IPv4 InternalIP: egret tunnels to it over IPv6, Cilium does not use it",
    "A node's underlay address, the tunnel's outer address, is its first IPv4 InternalIP, else its first IPv6 one (SEMANTICS.md, \"Nodes\"). egret tunnels to a gateway node of an IPv6-only cluster over IPv6, so IPv6-only clusters get egress gateways. Cilium's tunnel is IPv4 only (cilium#40209): it resolves a gateway entry to the first matching node with an IPv4 InternalIP, and to none when there is none, so here egret and Cilium disagree (`egret compile --emit cilium` shows Cilium's rows). A source node tunnels to such a gateway from its own IPv6 address: a source node with no IPv6 address cannot reach it, and its pods' traffic through this gateway is lost (the kernel finds no IPv6 route for the outer packet).\n\nExample: `egressGateway: {nodeSelector: {matchLabels: {egress: \"true\"}}}` where the only matching node's InternalIP is `2001:db8::9`.\n\nFix: nothing, if the cluster is IPv6-only and does not run Cilium's egress gateway; otherwise give the gateway node an IPv4 InternalIP, and give every node whose pods use it an IPv6 address.";

    NODE_FACTS_MISSING = "W0315", "node-facts-missing", Warning,
    "a check against a gateway node's interfaces cannot run: the snapshot has no NodeNetwork for the node",
    "Whether an `egressIP` is on the gateway node (E0306), an `interface` exists there (E0307) and the node has an address of each needed family (E0313) are facts of the node, not of the Kubernetes API: egret reads them from the node's `NodeNetwork` (egret.dev/v1alpha1). Without one these checks are skipped for that node, and lint says so rather than passing silently.\n\nFix: every `egret-agent --kube` publishes its node's NodeNetwork; take the snapshot with `kubectl get nodes,namespaces,pods,nodenetworks -A -o yaml > snapshot.yaml`. Without agents, add a NodeNetwork for the node to the snapshot (see examples/cluster/nodenetwork.yaml).";

    UNKNOWN_NODE = "E0401", "unknown-node", Error,
    "the node named on the command line is not in the snapshot",
    "`--node NAME` must name a Node object of the snapshot.\n\nFix: list nodes with `kubectl get nodes` and include them in the snapshot.";

    UNKNOWN_ENDPOINT = "E0402", "unknown-endpoint", Error,
    "`--from` names no pod of the snapshot",
    "`egret explain --from NAMESPACE/POD` needs that pod, with an IP, in the snapshot.\n\nFix: include the pod, or give its IP.";
}

/// Looks a code up by id (`E0102`) or name (`unknown-field`), case-insensitively.
pub fn lookup(key: &str) -> Option<&'static Code> {
    ALL.iter().copied().find(|c| c.id.eq_ignore_ascii_case(key) || c.name.eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut ids = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for c in ALL {
            assert!(ids.insert(c.id), "duplicate id {}", c.id);
            assert!(names.insert(c.name), "duplicate name {}", c.name);
            let prefix = match c.severity {
                Severity::Error => 'E',
                Severity::Warning => 'W',
            };
            assert!(c.id.starts_with(prefix), "{} severity does not match its letter", c.id);
            assert_eq!(c.id.len(), 5);
            assert!(c.doc.contains("Fix"), "{} doc has no fix", c.id);
        }
    }

    #[test]
    fn lookup_by_id_and_name() {
        assert_eq!(lookup("e0102").map(|c| c.name), Some("unknown-field"));
        assert_eq!(lookup("conflict").map(|c| c.id), Some("E0202"));
        assert!(lookup("E9999").is_none());
    }
}
