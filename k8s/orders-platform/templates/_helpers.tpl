{{/* The environment every service gets. */}}
{{- define "orders.env" -}}
- name: {{ .svc.portVariable }}
  value: "0.0.0.0:{{ .svc.port }}"
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .root.Values.kafka.bootstrapServers | quote }}
- name: KAFKA_PROPERTIES
  value: {{ .root.Values.kafka.properties | quote }}
- name: LOG_FORMAT
  value: json
# The pod's name: stats-aggregator's transactional id is <APPLICATION_ID>-<INSTANCE_ID>.
- name: INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if .svc.databaseSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .svc.databaseSecret }}
      key: url
{{- end }}
{{- range $k, $v := .svc.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}
