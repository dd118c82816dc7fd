{{/* Labels of every object of a service: (dict "root" $ "name" $name). */}}
{{- define "orders.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: orders-platform
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The labels that select a service's pods. */}}
{{- define "orders.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* A service's image. */}}
{{- define "orders.image" -}}
{{ .root.Values.image.repository }}/{{ .name }}:{{ .root.Values.image.tag }}
{{- end -}}

{{/* The environment every service gets besides the shared ConfigMap. */}}
{{- define "orders.env" -}}
- name: {{ .svc.portVariable }}
  value: "0.0.0.0:{{ .svc.port }}"
- name: SHUTDOWN_TIMEOUT
  value: "{{ .root.Values.shutdownTimeoutSeconds }}s"
# The pod's name: stats-aggregator's transactional id is <APPLICATION_ID>-<INSTANCE_ID>.
- name: INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if .svc.databaseSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .svc.databaseSecret }}
      key: url
{{- end }}
{{- with .root.Values.kafka.propertiesSecret }}
- name: KAFKA_PROPERTIES
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: properties
{{- end }}
{{- range $k, $v := .svc.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* The pod spec parts every workload shares: no API token, security, the host's network
when asked, pull secrets. */}}
{{- define "orders.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- if .root.Values.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
