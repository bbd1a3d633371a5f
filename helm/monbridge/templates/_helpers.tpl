{{/* Names, labels and the image reference shared by every template. */}}

{{- define "monbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "monbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "monbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "monbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "monbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "monbridge.labels" -}}
helm.sh/chart: {{ include "monbridge.chart" . }}
{{ include "monbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.mode }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "monbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "monbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "monbridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The HTTP scheme of monbridge's server: https when config.server.tls is set. */}}
{{- define "monbridge.scheme" -}}
{{- if and .Values.config.server .Values.config.server.tls }}https{{ else }}http{{ end }}
{{- end }}

{{/* A header name as an environment variable: MONBRIDGE_OTLP_HEADER_X_API_KEY. */}}
{{- define "monbridge.headerEnv" -}}
{{- printf "MONBRIDGE_OTLP_HEADER_%s" (. | upper | replace "-" "_" | replace "." "_") }}
{{- end }}

{{/* A remote-write header name as an environment variable: MONBRIDGE_RW_HEADER_X_SCOPE_ORGID. */}}
{{- define "monbridge.rwHeaderEnv" -}}
{{- printf "MONBRIDGE_RW_HEADER_%s" (. | upper | replace "-" "_" | replace "." "_") }}
{{- end }}

{{/* "true" when presets.prometheusScrape remote-writes (a url or urlKey is set), else empty. */}}
{{- define "monbridge.remoteWrite" -}}
{{- $s := .Values.presets.prometheusScrape }}
{{- if and $s.enabled (or $s.remoteWrite.url $s.remoteWrite.urlKey) }}true{{ end }}
{{- end }}

{{/* "true" when the remote-write queue lives on a PersistentVolumeClaim per pod, else empty. */}}
{{- define "monbridge.queuePersistent" -}}
{{- if and (include "monbridge.remoteWrite" .) .Values.presets.prometheusScrape.remoteWrite.queue.persistence.enabled (eq .Values.mode "statefulset") }}true{{ end }}
{{- end }}

{{/* Where the remote-write queue's volume is mounted, and where file_sd files are. */}}
{{- define "monbridge.queueDir" -}}/var/lib/monbridge{{- end }}
{{- define "monbridge.fileSDDir" -}}/etc/monbridge-targets{{- end }}

{{/* The queue volume's size: maxBytes plus a quarter (the segment being written, ack files)
and 16Mi, in Mi; or persistence.size when set. */}}
{{- define "monbridge.queueSize" -}}
{{- $q := .Values.presets.prometheusScrape.remoteWrite.queue }}
{{- $mi := 1048576 }}
{{- printf "%dMi" (add (div (add (div (mul (int64 $q.maxBytes) 5) 4) (sub $mi 1)) $mi) 16) }}
{{- end }}

{{/* "true" when the pods split the scrape targets (MONBRIDGE_SHARD_COUNT=replicas), else empty. */}}
{{- define "monbridge.sharded" -}}
{{- if and .Values.presets.prometheusScrape.sharding.enabled (eq .Values.mode "statefulset") }}true{{ end }}
{{- end }}

{{/* "true" when presets.alerting is on, else empty. */}}
{{- define "monbridge.alerting" -}}
{{- if .Values.presets.alerting.enabled }}true{{ end }}
{{- end }}

{{/* Where the alert state (alert store, silences, notification log, outbox) is mounted. */}}
{{- define "monbridge.alertStateDir" -}}/var/lib/monbridge-alerting{{- end }}

{{/* "true" when the alert state lives on a PersistentVolumeClaim per pod, else empty. */}}
{{- define "monbridge.alertStatePersistent" -}}
{{- $a := .Values.presets.alerting }}
{{- if and $a.enabled $a.state.persistence.enabled (eq .Values.mode "statefulset") }}true{{ end }}
{{- end }}

{{/* A notifier header name as an environment variable: MONBRIDGE_WEBHOOK_HEADER_AUTHORIZATION. */}}
{{- define "monbridge.notifierHeaderEnv" -}}
{{- printf "MONBRIDGE_%s_HEADER_%s" .notifier (.name | upper | replace "-" "_" | replace "." "_") }}
{{- end }}
