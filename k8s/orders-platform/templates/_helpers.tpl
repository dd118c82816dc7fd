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
{{- if and .svc.public .svc.adminPort }}
- name: ADMIN_ADDR
  value: "0.0.0.0:{{ .svc.adminPort }}"
{{- end }}
{{- if .root.Values.adminToken.secret }}
- name: ADMIN_TOKEN_FILE
  value: /var/run/secrets/orders/admin-token/token
{{- end }}
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
{{- include "orders.kafkaSecurityEnv" . }}
{{- if .svc.public }}
{{- include "orders.authEnv" . }}
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


{{/* Kafka over TLS and SASL: each service its own user, the password and the CA as
mounted files (orders.secretVolumes). */}}
{{- define "orders.kafkaSecurityEnv" -}}
{{- $kafka := .root.Values.kafka }}
{{- if ne $kafka.securityProtocol "plaintext" }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if hasPrefix "sasl" $kafka.securityProtocol }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $kafka.saslMechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ .name | quote }}
- name: KAFKA_SASL_PASSWORD_FILE
  value: /var/run/secrets/orders/kafka-user/password
{{- end }}
{{- if $kafka.caSecret }}
- name: KAFKA_SSL_CA_LOCATION
  value: /var/run/secrets/orders/kafka-ca/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* The public APIs' authentication (crates/runtime/src/auth). */}}
{{- define "orders.authEnv" -}}
{{- $auth := .root.Values.auth }}
- name: AUTH
  value: {{ $auth.mode | quote }}
{{- if eq $auth.mode "jwt" }}
- name: AUTH_ISSUER
  value: {{ required "auth.issuer is required with auth.mode jwt" $auth.issuer | quote }}
- name: AUTH_AUDIENCE
  value: {{ required "auth.audience is required with auth.mode jwt" $auth.audience | quote }}
- name: AUTH_JWKS
  value: {{ required "auth.jwksUrl is required with auth.mode jwt" $auth.jwksUrl | quote }}
- name: AUTH_ADMIN_SCOPE
  value: {{ $auth.adminScope | quote }}
{{- else if ne $auth.mode "off" }}
{{- fail "auth.mode is jwt or off" }}
{{- end }}
{{- end -}}

{{/* The Secrets a service reads as files: its Kafka user's password and the brokers' CA
(Kafka over SASL/TLS), the PostgreSQL CA. `volumes` for the pod, `mounts` for the
container; `migrate` leaves out what a migrate Job does not use (Kafka). */}}
{{- define "orders.secretVolumes" -}}
{{- $kafka := .root.Values.kafka }}
{{- if and (not .migrate) (hasPrefix "sasl" $kafka.securityProtocol) }}
- name: kafka-user
  secret:
    secretName: {{ $kafka.userSecret | replace "{service}" .name }}
    items: [{ key: password, path: password }]
{{- end }}
{{- if and (not .migrate) (ne $kafka.securityProtocol "plaintext") $kafka.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $kafka.caSecret }}
    items: [{ key: ca.crt, path: ca.crt }]
{{- end }}
{{- if and (not .migrate) .root.Values.adminToken.secret }}
- name: admin-token
  secret:
    secretName: {{ .root.Values.adminToken.secret }}
    items: [{ key: token, path: token }]
{{- end }}
{{- if and .svc.databaseSecret .root.Values.postgres.caSecret }}
- name: postgres-ca
  secret:
    secretName: {{ .root.Values.postgres.caSecret }}
    items: [{ key: ca.crt, path: ca.crt }]
{{- end }}
{{- end -}}

{{- define "orders.secretMounts" -}}
{{- $kafka := .root.Values.kafka }}
{{- if and (not .migrate) (hasPrefix "sasl" $kafka.securityProtocol) }}
- { name: kafka-user, mountPath: /var/run/secrets/orders/kafka-user, readOnly: true }
{{- end }}
{{- if and (not .migrate) (ne $kafka.securityProtocol "plaintext") $kafka.caSecret }}
- { name: kafka-ca, mountPath: /var/run/secrets/orders/kafka-ca, readOnly: true }
{{- end }}
{{- if and (not .migrate) .root.Values.adminToken.secret }}
- { name: admin-token, mountPath: /var/run/secrets/orders/admin-token, readOnly: true }
{{- end }}
{{- if and .svc.databaseSecret .root.Values.postgres.caSecret }}
- { name: postgres-ca, mountPath: /var/run/secrets/orders/postgres-ca, readOnly: true }
{{- end }}
{{- end -}}
