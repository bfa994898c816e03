{{/* Names, labels and shared pieces of the Gatehouse chart. */}}

{{- define "gatehouse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: gatehouse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gatehouse
{{- end -}}

{{/* Selector labels of one component: pass (list $ "component"). */}}
{{- define "gatehouse.selector" -}}
app.kubernetes.io/name: gatehouse
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "gatehouse.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "gatehouse.redisImage" -}}
{{- if .Values.redis.image.digest -}}
{{ .Values.redis.image.repository }}@{{ .Values.redis.image.digest }}
{{- else -}}
{{ .Values.redis.image.repository }}:{{ .Values.redis.image.tag }}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for every Gatehouse pod. */}}
{{- define "gatehouse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gatehouse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gatehouse.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Namespaces the scan Jobs run in, for their NetworkPolicy. */}}
{{- define "gatehouse.scanNamespaces" -}}
{{- $ns := .Values.networkPolicy.scanNamespaces | default .Values.watch.namespaces -}}
{{- toJson $ns -}}
{{- end -}}

{{- define "gatehouse.redisUsersSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis-users" (include "gatehouse.fullname" .)) -}}
{{- end -}}

{{/* Redis URL of the webhook and operator (the password comes from a file). */}}
{{- define "gatehouse.redisUrl" -}}
{{- if .Values.redis.enabled -}}
redis://gatehouse@{{ include "gatehouse.fullname" . }}-redis.{{ .Release.Namespace }}.svc:6379
{{- else -}}
{{ required "redis.external.url is required when redis.enabled is false" .Values.redis.external.url }}
{{- end -}}
{{- end -}}

{{/* Redis URL of the scan pods, which run in other namespaces. */}}
{{- define "gatehouse.scanRedisUrl" -}}
{{- if .Values.redis.enabled -}}
redis://gatehouse-scan@{{ include "gatehouse.fullname" . }}-redis.{{ .Release.Namespace }}.svc:6379
{{- else -}}
{{ .Values.redis.external.scanUrl | default .Values.redis.external.url }}
{{- end -}}
{{- end -}}

{{/* Volumes with the Redis passwords (and CA) of the webhook and operator. */}}
{{- define "gatehouse.redisVolumes" -}}
{{- if .Values.redis.enabled }}
- name: redis-password
  secret:
    secretName: {{ include "gatehouse.redisUsersSecret" . }}
    defaultMode: 0440
    items:
      - key: gatehouse
        path: password
{{- else if .Values.redis.external.existingSecret }}
- name: redis-password
  secret:
    secretName: {{ .Values.redis.external.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.redis.external.passwordKey }}
        path: password
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.external.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.external.caSecret }}
    defaultMode: 0444
    items:
      - key: {{ .Values.redis.external.caKey }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "gatehouse.redisMounts" -}}
{{- if or .Values.redis.enabled .Values.redis.external.existingSecret }}
- name: redis-password
  mountPath: /var/run/gatehouse/redis
  readOnly: true
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.external.caSecret }}
- name: redis-ca
  mountPath: /var/run/gatehouse/redis-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "gatehouse.redisEnv" -}}
- name: GATEHOUSE_REDIS_URL
  value: {{ include "gatehouse.redisUrl" . | quote }}
{{- if or .Values.redis.enabled .Values.redis.external.existingSecret }}
- name: GATEHOUSE_REDIS_PASSWORD_FILE
  value: /var/run/gatehouse/redis/password
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.external.caSecret }}
- name: SSL_CERT_FILE
  value: /var/run/gatehouse/redis-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "gatehouse.githubEnv" -}}
- name: GATEHOUSE_GITHUB_APP_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.keys.appId }}
- name: GATEHOUSE_GITHUB_PRIVATE_KEY_FILE
  value: /var/run/gatehouse/github/private-key.pem
- name: GATEHOUSE_GITHUB_API_URL
  value: {{ .Values.github.apiUrl | quote }}
{{- end -}}

{{- define "gatehouse.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* A volume with one key of the credentials Secret: pass (list $ "volume" "key" "path"). */}}
{{- define "gatehouse.secretVolume" -}}
{{- $ := index . 0 -}}
- name: {{ index . 1 }}
  secret:
    secretName: {{ $.Values.secrets.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ index . 2 }}
        path: {{ index . 3 }}
{{- end -}}
