{{/*
The monbridge config file: what the presets generate, with .Values.config deep-merged over it.
Maps merge key by key (the user's value wins, false and 0 included); lists are replaced, except
config.plugins, whose entries merge by plugin_id (a new plugin_id is appended).
Secrets never appear here: presets refer to them as ${VAR}, set from secretKeyRef env vars.
*/}}

{{/* deepMerge: (dict "dst" map "src" map) -> JSON of dst with src merged over it. */}}
{{- define "monbridge.deepMerge" -}}
{{- $dst := deepCopy .dst }}
{{- range $k, $v := .src }}
{{- $cur := get $dst $k }}
{{- if and (kindIs "map" $v) (kindIs "map" $cur) }}
{{- $_ := set $dst $k (include "monbridge.deepMerge" (dict "dst" $cur "src" $v) | fromJson) }}
{{- else }}
{{- $_ := set $dst $k $v }}
{{- end }}
{{- end }}
{{- toJson $dst }}
{{- end }}

{{/* The plugin entries the presets generate, as JSON {"plugins": [...]}. */}}
{{- define "monbridge.presetPlugins" -}}
{{- $plugins := list }}
{{- $p := .Values.presets }}
{{- if $p.hostMetrics.enabled }}
{{- $plugins = append $plugins (dict
      "plugin_id" "monitoring.metrics.system"
      "enabled" true
      "config" (dict "collection_interval" $p.hostMetrics.collectionInterval "procfs_path" "/host/proc" "rootfs_path" "/host/root")) }}
{{- end }}
{{- if $p.otlpExport.enabled }}
{{- $o := $p.otlpExport }}
{{- $cfg := dict "protocol" $o.protocol "interval" $o.interval "compression" $o.compression }}
{{- if $o.endpoint }}
{{- $_ := set $cfg "endpoint" $o.endpoint }}
{{- else }}
{{- $_ := set $cfg "endpoint" "${MONBRIDGE_OTLP_ENDPOINT}" }}
{{- end }}
{{- if $o.headers }}
{{- $headers := dict }}
{{- range $name, $key := $o.headers }}
{{- $_ := set $headers (lower $name) (printf "${%s}" (include "monbridge.headerEnv" $name)) }}
{{- end }}
{{- $_ := set $cfg "headers" $headers }}
{{- end }}
{{- $plugins = append $plugins (dict "plugin_id" "monitoring.integration.otlp" "enabled" true "config" $cfg) }}
{{- end }}
{{- if $p.prometheusScrape.enabled }}
{{- $plugins = append $plugins (include "monbridge.prometheusPlugin" . | fromJson) }}
{{- end }}
{{- if $p.alerting.enabled }}
{{- $plugins = concat $plugins (include "monbridge.alertingPlugins" . | fromJson).plugins }}
{{- end }}
{{- toJson (dict "plugins" $plugins) }}
{{- end }}

{{/* The plugin entry of presets.prometheusScrape, as JSON. Sharding is not in it: the pod's
MONBRIDGE_SHARD_COUNT (and its ordinal in HOSTNAME) sets it, so every replica shares one config. */}}
{{- define "monbridge.prometheusPlugin" -}}
{{- $s := .Values.presets.prometheusScrape }}
{{- $targets := list }}
{{- range $s.targets }}
{{- $t := dict "job" .job "url" .url }}
{{- with .labels }}
{{- $_ := set $t "labels" . }}
{{- end }}
{{- $targets = append $targets $t }}
{{- end }}
{{- $scrape := dict "interval" $s.interval "timeout" $s.timeout "targets" $targets "honor_labels" $s.honorLabels "sample_limit" $s.sampleLimit }}
{{- if $s.fileSD.configMap }}
{{- $dir := include "monbridge.fileSDDir" . }}
{{- $_ := set $scrape "file_sd" (list (printf "%s/*.json" $dir) (printf "%s/*.yaml" $dir) (printf "%s/*.yml" $dir)) }}
{{- $_ := set $scrape "file_sd_job" $s.fileSD.job }}
{{- end }}
{{- $cfg := dict "scrape" $scrape }}
{{- $rw := $s.remoteWrite }}
{{- if include "monbridge.remoteWrite" . }}
{{- $w := dict "url" ($rw.url | default "${env:MONBRIDGE_RW_URL}") }}
{{- if $rw.headers }}
{{- $headers := dict }}
{{- range $name, $key := $rw.headers }}
{{- $_ := set $headers (lower $name) (printf "${env:%s}" (include "monbridge.rwHeaderEnv" $name)) }}
{{- end }}
{{- $_ := set $w "headers" $headers }}
{{- end }}
{{- if $rw.basicAuth.passwordKey }}
{{- $_ := set $w "basic_auth" (dict "username" $rw.basicAuth.username "password" "${env:MONBRIDGE_RW_PASSWORD}") }}
{{- end }}
{{- if $rw.bearerTokenKey }}
{{- $_ := set $w "bearer_token" "${env:MONBRIDGE_RW_BEARER_TOKEN}" }}
{{- end }}
{{- $_ := set $w "queue" (dict "path" (printf "%s/remote-write" (include "monbridge.queueDir" .)) "max_bytes" (int64 $rw.queue.maxBytes)) }}
{{- $_ := set $cfg "remote_write" (list $w) }}
{{- end }}
{{- toJson (dict "plugin_id" "monitoring.integration.prometheus" "enabled" true "config" $cfg) }}
{{- end }}

{{/* The plugin entries of presets.alerting, as JSON {"plugins": [...]}, in processor-chain order:
the rules, dedup, grouping, then each notifier that has a destination. Secret values are
${env:MONBRIDGE_...} references to variables set from secretKeyRef. */}}
{{- define "monbridge.alertingPlugins" -}}
{{- $a := .Values.presets.alerting }}
{{- $plugins := list }}
{{- $rules := list }}
{{- range $a.rules }}
{{- $rule := deepCopy . }}
{{- if $a.multipleEngines }}
{{- /* Each engine's alerts carry its node (daemonset) or pod, so receivers tell them apart. */}}
{{- $engine := ternary (dict "node" "${env:NODE_NAME}") (dict "pod" "${env:POD_NAME}") (eq $.Values.mode "daemonset") }}
{{- $_ := set $rule "labels" (merge (deepCopy ($rule.labels | default dict)) $engine) }}
{{- end }}
{{- $rules = append $rules $rule }}
{{- end }}
{{- $plugins = append $plugins (dict "plugin_id" "monitoring.alerts.rules" "enabled" true
      "config" (dict "evaluation_interval" $a.evaluationInterval "rules" $rules)) }}
{{- if $a.dedup }}
{{- $plugins = append $plugins (dict "plugin_id" "monitoring.alerts.dedup" "enabled" true) }}
{{- end }}
{{- $g := $a.grouping }}
{{- $plugins = append $plugins (dict "plugin_id" "monitoring.alerts.grouping" "enabled" true
      "config" (dict "group_by" $g.groupBy "group_wait" $g.groupWait "group_interval" $g.groupInterval "repeat_interval" $g.repeatInterval)) }}
{{- $w := $a.webhook }}
{{- if $w.url }}
{{- $cfg := dict "url" $w.url "send_resolved" $w.sendResolved }}
{{- include "monbridge.notifierExtras" (dict "cfg" $cfg "notifier" "WEBHOOK" "values" $w) }}
{{- $plugins = append $plugins (dict "plugin_id" "monitoring.alerts.webhook" "enabled" true "config" $cfg) }}
{{- end }}
{{- $am := $a.alertmanager }}
{{- if $am.url }}
{{- $cfg := dict "url" $am.url }}
{{- include "monbridge.notifierExtras" (dict "cfg" $cfg "notifier" "ALERTMANAGER" "values" $am) }}
{{- $plugins = append $plugins (dict "plugin_id" "monitoring.alerts.alertmanager" "enabled" true "config" $cfg) }}
{{- end }}
{{- $e := $a.email }}
{{- if $e.smtp }}
{{- $cfg := dict "smtp" $e.smtp "from" $e.from "to" $e.to "starttls" $e.starttls "tls" $e.tls "send_resolved" $e.sendResolved }}
{{- if $e.username }}
{{- $_ := set $cfg "username" $e.username }}
{{- $_ := set $cfg "password" "${env:MONBRIDGE_SMTP_PASSWORD}" }}
{{- end }}
{{- with $e.match }}
{{- $_ := set $cfg "match" . }}
{{- end }}
{{- $plugins = append $plugins (dict "plugin_id" "monitoring.alerts.email" "enabled" true "config" $cfg) }}
{{- end }}
{{- toJson (dict "plugins" $plugins) }}
{{- end }}

{{/* Sets headers (as ${env:...} references) and match of a notifier's config map .cfg. */}}
{{- define "monbridge.notifierExtras" -}}
{{- $notifier := .notifier }}
{{- if .values.headers }}
{{- $headers := dict }}
{{- range $name, $key := .values.headers }}
{{- $_ := set $headers (lower $name) (printf "${env:%s}" (include "monbridge.notifierHeaderEnv" (dict "notifier" $notifier "name" $name))) }}
{{- end }}
{{- $_ := set .cfg "headers" $headers }}
{{- end }}
{{- with .values.match }}
{{- $_ := set $.cfg "match" . }}
{{- end }}
{{- end }}

{{/* The whole config as a map (JSON). */}}
{{- define "monbridge.configMap" -}}
{{- $server := dict "listen" (printf "0.0.0.0:%d" (int .Values.port)) }}
{{- if .Values.service.enabled }}
{{- /* State-changing requests (Alertmanager webhooks, acks) may name the Service (DNS-rebinding protection). */}}
{{- $svc := include "monbridge.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $_ := set $server "allowed_hosts" (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) }}
{{- end }}
{{- $generated := dict "server" $server }}
{{- if .Values.presets.alerting.enabled }}
{{- $dir := include "monbridge.alertStateDir" . }}
{{- $alerting := dict "state_dir" $dir "outbox_dir" (printf "%s/outbox" $dir) }}
{{- with .Values.presets.alerting.externalURL }}
{{- $_ := set $alerting "external_url" . }}
{{- end }}
{{- $_ := set $generated "alerting" $alerting }}
{{- end }}
{{- $user := deepCopy (.Values.config | default dict) }}
{{- $userPlugins := $user.plugins | default list }}
{{- $config := include "monbridge.deepMerge" (dict "dst" $generated "src" (omit $user "plugins")) | fromJson }}
{{- $plugins := (include "monbridge.presetPlugins" . | fromJson).plugins | default list }}
{{- range $u := $userPlugins }}
{{- $merged := list }}
{{- $found := false }}
{{- range $g := $plugins }}
{{- if eq $g.plugin_id $u.plugin_id }}
{{- $merged = append $merged (include "monbridge.deepMerge" (dict "dst" $g "src" $u) | fromJson) }}
{{- $found = true }}
{{- else }}
{{- $merged = append $merged $g }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- $merged = append $merged $u }}
{{- end }}
{{- $plugins = $merged }}
{{- end }}
{{- $_ := set $config "plugins" $plugins }}
{{- toJson $config }}
{{- end }}

{{/* The config file's text. */}}
{{- define "monbridge.configText" -}}
# monbridge config generated by the {{ include "monbridge.chart" . }} chart from its presets and .Values.config.
# No secret values here: references to them are resolved from the environment (Kubernetes Secrets) and mounted files.
{{ include "monbridge.configMap" . | fromJson | toYaml }}
{{- end }}
