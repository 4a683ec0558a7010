//! Cluster-internal ranges: pod CIDRs, node IPs and service CIDRs, whose
//! traffic always passes.

use super::*;

/// Where a cluster-internal range comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum InternalSource {
    PodCidr { node: String },
    NodeIp { node: String },
    ServiceCidr,
}

impl fmt::Display for InternalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InternalSource::PodCidr { node } => write!(f, "pod CIDR of node {node}"),
            InternalSource::NodeIp { node } => write!(f, "IP of node {node}"),
            InternalSource::ServiceCidr => f.write_str("service CIDR"),
        }
    }
}

/// Cluster-internal ranges: traffic to them is never sent to a gateway.
#[derive(Debug, Clone, Default)]
pub struct InternalRanges {
    /// Every contributing prefix with its origin, sorted.
    pub sources: Vec<(Cidr, InternalSource)>,
    /// Their union, sorted and merged.
    pub ranges: Vec<Range>,
    /// The union as minimal canonical prefixes (what the datapath holds).
    pub prefixes: Vec<Cidr>,
}

impl InternalRanges {
    pub fn contains(&self, ip: IpAddr) -> bool {
        prefix::ranges_contain(&self.ranges, ip).is_some()
    }
    /// The first contributing prefix (in sorted order) that contains `ip`.
    pub fn source_of(&self, ip: IpAddr) -> Option<&(Cidr, InternalSource)> {
        self.sources.iter().find(|(c, _)| c.contains_ip(ip))
    }
}

impl World {
    pub(super) fn compute_internal(&self) -> InternalRanges {
        let mut sources: Vec<(Cidr, InternalSource)> = Vec::new();
        for n in &self.nodes {
            for c in &n.pod_cidrs {
                sources.push((c.network(), InternalSource::PodCidr { node: n.name.clone() }));
            }
            for ip in &n.internal_ips {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                sources.push((Cidr::new(*ip, len), InternalSource::NodeIp { node: n.name.clone() }));
            }
        }
        for c in &self.options.service_cidrs {
            sources.push((c.network(), InternalSource::ServiceCidr));
        }
        sources.sort_by(|a, b| prefix::prefix_order(&a.0, &b.0).then_with(|| a.1.cmp(&b.1)));
        sources.dedup();
        let ranges = prefix::merge_ranges(sources.iter().map(|(c, _)| Range::of(c)).collect());
        let prefixes = ranges.iter().flat_map(Range::prefixes).collect();
        InternalRanges { sources, ranges, prefixes }
    }
}
