{{/*
Cross-field checks the schema cannot express. Each failure says what is wrong and what to set.
Included once, from configmap.yaml (rendered in every mode).
*/}}
{{- define "monbridge.validate" -}}
{{- $v := .Values }}
{{- $p := $v.presets }}

{{- if and $v.autoscaling.enabled (ne $v.mode "deployment") }}
{{- fail (printf "autoscaling.enabled=true needs mode: deployment (mode is %s). The chart autoscales Deployments only (a DaemonSet runs one pod per node; StatefulSet replicas will own scrape shards); set autoscaling.enabled=false or mode=deployment." $v.mode) }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- if and $v.autoscaling.targetCPUUtilizationPercentage (not (dig "requests" "cpu" "" $v.resources)) }}
{{- fail "autoscaling.targetCPUUtilizationPercentage is a percentage of the CPU request, but resources.requests.cpu is not set: set resources.requests.cpu (e.g. 100m) or autoscaling.targetCPUUtilizationPercentage=null." }}
{{- end }}
{{- if and $v.autoscaling.targetMemoryUtilizationPercentage (not (dig "requests" "memory" "" $v.resources)) }}
{{- fail "autoscaling.targetMemoryUtilizationPercentage is a percentage of the memory request, but resources.requests.memory is not set: set resources.requests.memory (e.g. 128Mi) or autoscaling.targetMemoryUtilizationPercentage=null." }}
{{- end }}
{{- if not (or $v.autoscaling.targetCPUUtilizationPercentage $v.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled=true needs a target: set autoscaling.targetCPUUtilizationPercentage and/or autoscaling.targetMemoryUtilizationPercentage." }}
{{- end }}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)." (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}

{{- if and $p.hostMetrics.enabled (ne $v.mode "daemonset") }}
{{- fail (printf "presets.hostMetrics needs mode: daemonset (mode is %s): it reads the node's /proc and /sys, and a %s pod would report only whichever node it lands on. Set mode=daemonset, or presets.hostMetrics.enabled=false (it is on by default)." $v.mode $v.mode) }}
{{- end }}

{{- if $p.prometheusScrape.enabled }}
{{- fail "presets.prometheusScrape is not available yet: the Prometheus scrape plugin ships in a later monbridge release. Set presets.prometheusScrape.enabled=false." }}
{{- end }}
{{- if $p.alerting.enabled }}
{{- fail "presets.alerting is not available yet: the alerting plugins ship in a later monbridge release. Set presets.alerting.enabled=false." }}
{{- end }}

{{- $o := $p.otlpExport }}
{{- if $o.enabled }}
{{- if and $o.endpoint $o.endpointKey }}
{{- fail "presets.otlpExport: set either endpoint (a plain URL) or endpointKey (a key of the Secret secretName), not both." }}
{{- end }}
{{- if not (or $o.endpoint $o.endpointKey) }}
{{- fail "presets.otlpExport.enabled=true needs a destination: set presets.otlpExport.endpoint (e.g. http://otel-collector:4318) or presets.otlpExport.secretName and presets.otlpExport.endpointKey." }}
{{- end }}
{{- end }}
{{- if and (or $o.endpointKey $o.headers) (not $o.secretName) }}
{{- fail "presets.otlpExport.endpointKey and presets.otlpExport.headers name keys of a Secret: set presets.otlpExport.secretName to that Secret's name (in the release namespace)." }}
{{- end }}

{{- if and $v.serviceMonitor.enabled $v.podMonitor.enabled }}
{{- fail "serviceMonitor.enabled and podMonitor.enabled are both true: both would scrape the same pods, so every series would be stored twice. Enable one of them." }}
{{- end }}
{{- if and $v.serviceMonitor.enabled (not $v.service.enabled) }}
{{- fail "serviceMonitor.enabled=true needs service.enabled=true (a ServiceMonitor selects a Service); or use podMonitor instead." }}
{{- end }}

{{- $secretRef := "^\\$\\{(file:/[^}]+|(env:)?[A-Za-z_][A-Za-z0-9_]*)\\}$" }}
{{- $serverAuth := dig "server" "auth" dict ($v.config | default dict) }}
{{- if and $serverAuth.bearer_token (not (regexMatch $secretRef $serverAuth.bearer_token)) }}
{{- fail "config.server.auth.bearer_token must be a reference, not the token itself: the config is stored in a ConfigMap. Use \"${file:/path}\" with the Secret mounted through extraVolumes/extraVolumeMounts, or \"${VAR}\" with extraEnv from a secretKeyRef." }}
{{- end }}
{{- if and $serverAuth.basic (not (regexMatch $secretRef (toString $serverAuth.basic.password))) }}
{{- fail "config.server.auth.basic.password must be a reference, not the password itself: the config is stored in a ConfigMap. Use \"${file:/path}\" with the Secret mounted through extraVolumes/extraVolumeMounts, or \"${VAR}\" with extraEnv from a secretKeyRef." }}
{{- end }}

{{- $auth := dig "server" "auth" dict ($v.config | default dict) }}
{{- range $kind := list "serviceMonitor" "podMonitor" }}
{{- $m := get $v $kind }}
{{- if $m.enabled }}
{{- if $auth.basic }}
{{- fail (printf "%s.enabled=true with config.server.auth.basic: the chart's monitors authenticate with a bearer token only. Use config.server.auth.bearer_token with %s.bearerTokenSecret, or scrape without a %s." $kind $kind $kind) }}
{{- end }}
{{- if and $auth.bearer_token (not (and $m.bearerTokenSecret.name $m.bearerTokenSecret.key)) }}
{{- fail (printf "config.server.auth.bearer_token protects /metrics, so the %s needs the token: set %s.bearerTokenSecret.name and .key to the Secret holding it." $kind $kind) }}
{{- end }}
{{- if and $m.bearerTokenSecret.name (not $auth.bearer_token) }}
{{- fail (printf "%s.bearerTokenSecret is set but config.server.auth.bearer_token is not: monbridge would not check the token. Set config.server.auth.bearer_token (e.g. \"${file:/path}\" of the same Secret mounted with extraVolumes) or remove %s.bearerTokenSecret." $kind $kind) }}
{{- end }}
{{- end }}
{{- end }}

{{- if and $v.podDisruptionBudget.enabled (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (Kubernetes accepts only one)." }}
{{- end }}

{{- if and $v.networkPolicy.enabled $v.hostNetwork }}
{{- fail "networkPolicy.enabled=true has no effect with hostNetwork=true: NetworkPolicies do not apply to pods on the host network. Set one of them to false." }}
{{- end }}

{{- $listen := dig "server" "listen" "" ($v.config | default dict) }}
{{- if $listen }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if ne $port (toString (int $v.port)) }}
{{- fail (printf "config.server.listen (%s) uses a port other than port (%d), which the probes, Service and monitors use. Set port: %s instead, or make the two agree." $listen (int $v.port) ($port | default "?")) }}
{{- end }}
{{- end }}

{{- $config := include "monbridge.configMap" . | fromJson }}
{{- $enabled := list }}
{{- range $config.plugins }}
{{- if or (not (hasKey . "enabled")) .enabled }}
{{- $enabled = append $enabled .plugin_id }}
{{- end }}
{{- end }}
{{- if not $enabled }}
{{- fail "no monbridge plugin is enabled, so monbridge would collect and send nothing: enable a preset (presets.hostMetrics in mode daemonset, presets.otlpExport) or add an entry to config.plugins (e.g. plugin_id: monitoring.metrics.process)." }}
{{- end }}
{{- end }}
