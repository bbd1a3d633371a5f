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

{{/* The whole config as a map (JSON). */}}
{{- define "monbridge.configMap" -}}
{{- $generated := dict "server" (dict "listen" (printf "0.0.0.0:%d" (int .Values.port))) }}
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
