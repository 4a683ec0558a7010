{{/* The labels of every object: kustomize's (deploy/) plus Helm's own. */}}
{{- define "egret.labels" -}}
app.kubernetes.io/name: egret
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The agent's selector labels (the same as deploy/daemonset.yaml's). */}}
{{- define "egret.agentSelector" -}}
app.kubernetes.io/name: egret
app.kubernetes.io/component: agent
{{- end -}}

{{- define "egret.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Unprivileged, read-only, with only the capabilities eBPF and netlink need. */}}
{{- define "egret.agentSecurityContext" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  # BPF: maps and programs; PERFMON: what the verifier allows programs
  # (pointer arithmetic); NET_ADMIN: tcx attachment and the egret0 tunnel
  # device (runtime/tests/it/capabilities.rs: these three suffice)
  add: [BPF, NET_ADMIN, PERFMON]
{{- end -}}

{{/* Where the pod runs: every node, before other pods. */}}
{{- define "egret.placement" -}}
serviceAccountName: egret-agent
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- with .Values.agent.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.agent.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.agent.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.agent.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The host's bpffs, /run/egret and the CNI directories. */}}
{{- define "egret.volumes" -}}
- name: bpffs
  hostPath:
    path: /sys/fs/bpf
    type: DirectoryOrCreate
- name: egret-run
  hostPath:
    path: /run/egret
    type: DirectoryOrCreate
- name: cni-bin
  hostPath:
    path: {{ .Values.cni.binDir }}
    type: DirectoryOrCreate
- name: cni-conf
  hostPath:
    path: {{ .Values.cni.confDir }}
    type: DirectoryOrCreate
{{- end -}}

{{- define "egret.volumeMounts" -}}
- name: bpffs
  mountPath: /sys/fs/bpf
  mountPropagation: HostToContainer
- name: egret-run
  mountPath: /run/egret
- name: cni-bin
  mountPath: /host/opt/cni/bin
- name: cni-conf
  mountPath: /host/etc/cni/net.d
{{- end -}}
