{{/*
Cross-field checks the schema cannot express. Each failure says what is wrong and what to set.
Included once, from configmap.yaml (rendered in every mode).
*/}}
{{- define "monbridge.validate" -}}
{{- $v := .Values }}
{{- $p := $v.presets }}
{{- $s := $p.prometheusScrape }}

{{- if $s.sharding.enabled }}
{{- if ne $v.mode "statefulset" }}
{{- fail (printf "presets.prometheusScrape.sharding needs mode: statefulset (mode is %s): each pod takes its shard from its StatefulSet ordinal (<name>-<ordinal>), which %s pods do not have. Set mode=statefulset, or presets.prometheusScrape.sharding.enabled=false (then every replica scrapes every target)." $v.mode $v.mode) }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- fail "presets.prometheusScrape.sharding with autoscaling.enabled=true: the shard count is fixed to replicas in the pod spec, and every change of the replica count moves most targets to another pod. Set autoscaling.enabled=false and size replicas by hand." }}
{{- end }}
{{- if lt (int $v.replicas) 1 }}
{{- fail (printf "presets.prometheusScrape.sharding needs replicas >= 1 (replicas is %d): the targets are split into replicas shards. Set replicas (e.g. 2), or presets.prometheusScrape.sharding.enabled=false." (int $v.replicas)) }}
{{- end }}
{{- if $v.hostNetwork }}
{{- fail "presets.prometheusScrape.sharding with hostNetwork=true: on the node's network a pod's HOSTNAME is the node's name, not <name>-<ordinal>, so a pod cannot tell its shard. Set hostNetwork=false (scraping needs no node network)." }}
{{- end }}
{{- range $v.extraEnv }}
{{- if has .name (list "MONBRIDGE_SHARD_COUNT" "MONBRIDGE_SHARD_INDEX" "HOSTNAME") }}
{{- fail (printf "extraEnv sets %s, but presets.prometheusScrape.sharding sets the shard itself (MONBRIDGE_SHARD_COUNT=replicas, the index from the ordinal in HOSTNAME); one value for every pod would make them all scrape the same shard. Remove %s from extraEnv." .name .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $s.remoteWrite.queue.persistence.enabled (ne $v.mode "statefulset") }}
{{- fail (printf "presets.prometheusScrape.remoteWrite.queue.persistence needs mode: statefulset (mode is %s): each pod's queue gets its own PersistentVolumeClaim from the StatefulSet's volumeClaimTemplates. Set mode=statefulset, or persistence.enabled=false (the queue then lives in an emptyDir)." $v.mode) }}
{{- end }}
{{- if and $s.remoteWrite.queue.persistence.enabled (not (include "monbridge.remoteWrite" .)) }}
{{- fail "presets.prometheusScrape.remoteWrite.queue.persistence.enabled=true, but there is no remote write to queue: set presets.prometheusScrape.remoteWrite.url (or secretName and urlKey), or persistence.enabled=false." }}
{{- end }}

{{- if and $v.autoscaling.enabled (ne $v.mode "deployment") }}
{{- fail (printf "autoscaling.enabled=true needs mode: deployment (mode is %s). The chart autoscales Deployments only (a DaemonSet runs one pod per node; StatefulSet replicas own fixed scrape shards); set autoscaling.enabled=false or mode=deployment." $v.mode) }}
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

{{- if $s.enabled }}
{{- if not (or $s.targets $s.fileSD.configMap) }}
{{- fail "presets.prometheusScrape.enabled=true has nothing to scrape: list presets.prometheusScrape.targets (job and url each) and/or set presets.prometheusScrape.fileSD.configMap to a ConfigMap of file_sd files." }}
{{- end }}
{{- if gt (float64 $s.timeout) (float64 $s.interval) }}
{{- fail (printf "presets.prometheusScrape.timeout (%v s) is greater than presets.prometheusScrape.interval (%v s): a scrape must end before the next one starts. Lower timeout or raise interval." $s.timeout $s.interval) }}
{{- end }}
{{- $rw := $s.remoteWrite }}
{{- if and $rw.url $rw.urlKey }}
{{- fail "presets.prometheusScrape.remoteWrite: set either url (a plain URL) or urlKey (a key of the Secret secretName), not both." }}
{{- end }}
{{- $keys := list }}
{{- if $rw.urlKey }}{{ $keys = append $keys "urlKey" }}{{ end }}
{{- if $rw.headers }}{{ $keys = append $keys "headers" }}{{ end }}
{{- if $rw.basicAuth.passwordKey }}{{ $keys = append $keys "basicAuth.passwordKey" }}{{ end }}
{{- if $rw.bearerTokenKey }}{{ $keys = append $keys "bearerTokenKey" }}{{ end }}
{{- if and $keys (not $rw.secretName) }}
{{- fail (printf "presets.prometheusScrape.remoteWrite.%s name keys of a Secret: set presets.prometheusScrape.remoteWrite.secretName to that Secret's name (in the release namespace)." (join ", " $keys)) }}
{{- end }}
{{- if and (or $rw.headers $rw.basicAuth.passwordKey $rw.bearerTokenKey $rw.basicAuth.username $rw.secretName) (not (include "monbridge.remoteWrite" .)) }}
{{- fail "presets.prometheusScrape.remoteWrite has credentials but no destination: set presets.prometheusScrape.remoteWrite.url, or secretName and urlKey." }}
{{- end }}
{{- if and $rw.basicAuth.username (not $rw.basicAuth.passwordKey) }}
{{- fail "presets.prometheusScrape.remoteWrite.basicAuth.username needs basicAuth.passwordKey (the key of secretName holding the password)." }}
{{- end }}
{{- if and $rw.basicAuth.passwordKey (not $rw.basicAuth.username) }}
{{- fail "presets.prometheusScrape.remoteWrite.basicAuth.passwordKey needs basicAuth.username." }}
{{- end }}
{{- $auth := list }}
{{- if $rw.basicAuth.passwordKey }}{{ $auth = append $auth "basicAuth" }}{{ end }}
{{- if $rw.bearerTokenKey }}{{ $auth = append $auth "bearerTokenKey" }}{{ end }}
{{- range $name, $_ := $rw.headers }}{{ if eq (lower $name) "authorization" }}{{ $auth = append $auth "an authorization header" }}{{ end }}{{ end }}
{{- if gt (len $auth) 1 }}
{{- fail (printf "presets.prometheusScrape.remoteWrite: set only one of %s (each sets the Authorization header)." (join " and " $auth)) }}
{{- end }}
{{- end }}
{{- $a := $p.alerting }}
{{- if $a.enabled }}
{{- if and (eq $v.mode "daemonset") (not $a.multipleEngines) }}
{{- fail "presets.alerting in mode daemonset would run one alert engine per node: each notifies on its own (every alert once per node), and the Service sends Alertmanager webhooks and `monbridge alerts ack` to any one pod, whose state lacks the others' alerts. Use mode=statefulset (or deployment) with replicas=1 for one alert engine (its rules see what it scrapes, e.g. presets.prometheusScrape of node exporters), or set presets.alerting.multipleEngines=true to alert per node on purpose (alerts then carry a node label)." }}
{{- end }}
{{- if $v.autoscaling.enabled }}
{{- fail "presets.alerting with autoscaling.enabled=true: the autoscaler adds and removes alert engines, each notifying on its own, and a removed pod takes its alert state and pending notifications with it. Set autoscaling.enabled=false (one replica), or run alerting in a release of its own." }}
{{- end }}
{{- if and (ne $v.mode "daemonset") (gt (int $v.replicas) 1) (not $a.multipleEngines) }}
{{- fail (printf "presets.alerting with replicas=%d would run %d alert engines on the same metrics: every alert would be notified %d times, and the Service sends Alertmanager webhooks and acks to any one of them. Set replicas=1, or presets.alerting.multipleEngines=true if each replica's rules watch different data (e.g. its own scrape shard) and one notification per replica is acceptable." (int $v.replicas) (int $v.replicas) (int $v.replicas)) }}
{{- end }}
{{- if and $a.state.persistence.enabled (ne $v.mode "statefulset") }}
{{- fail (printf "presets.alerting.state.persistence needs mode: statefulset (mode is %s): each pod's alert state gets its own PersistentVolumeClaim from the StatefulSet's volumeClaimTemplates. Set mode=statefulset, or presets.alerting.state.persistence.enabled=false (the state then lives in an emptyDir and survives container restarts only)." $v.mode) }}
{{- end }}
{{- $names := list }}
{{- range $a.rules }}
{{- if has .name $names }}
{{- fail (printf "presets.alerting.rules: the rule name %s is used twice; a rule's name is its alertname, so give each rule its own." .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- range $n := list "webhook" "alertmanager" }}
{{- $c := get $a $n }}
{{- if and $c.headers (not $c.secretName) }}
{{- fail (printf "presets.alerting.%s.headers name keys of a Secret: set presets.alerting.%s.secretName to that Secret's name (in the release namespace)." $n $n) }}
{{- end }}
{{- if and (or $c.headers $c.secretName (ne (len $c.match) 0)) (not $c.url) }}
{{- fail (printf "presets.alerting.%s has settings but no url: set presets.alerting.%s.url, or remove its other settings." $n $n) }}
{{- end }}
{{- end }}
{{- $e := $a.email }}
{{- if $e.smtp }}
{{- if not (and $e.from $e.to) }}
{{- fail "presets.alerting.email.smtp is set, so the email notifier needs a sender and recipients: set presets.alerting.email.from and presets.alerting.email.to (a list of addresses)." }}
{{- end }}
{{- if and $e.tls $e.starttls }}
{{- fail "presets.alerting.email: tls (implicit TLS, port 465) and starttls exclude each other: set presets.alerting.email.starttls=false to use tls." }}
{{- end }}
{{- if and $e.username (not $e.passwordKey) }}
{{- fail "presets.alerting.email.username needs presets.alerting.email.passwordKey (the key of secretName holding the SMTP password)." }}
{{- end }}
{{- if and $e.passwordKey (not $e.username) }}
{{- fail "presets.alerting.email.passwordKey needs presets.alerting.email.username (the SMTP login)." }}
{{- end }}
{{- if and $e.passwordKey (not $e.secretName) }}
{{- fail "presets.alerting.email.passwordKey names a key of a Secret: set presets.alerting.email.secretName to that Secret's name (in the release namespace)." }}
{{- end }}
{{- else if or $e.from $e.to $e.username $e.secretName $e.passwordKey }}
{{- fail "presets.alerting.email has settings but no SMTP server: set presets.alerting.email.smtp (HOST:PORT), or remove its other settings." }}
{{- end }}
{{- $userAlerting := dig "alerting" dict ($v.config | default dict) }}
{{- range $k := list "state_dir" "outbox_dir" }}
{{- if hasKey $userAlerting $k }}
{{- fail (printf "config.alerting.%s is set, but presets.alerting keeps the alert state on its volume at %s (the root filesystem is read-only). Remove config.alerting.%s." $k (include "monbridge.alertStateDir" $) $k) }}
{{- end }}
{{- end }}
{{- if and $userAlerting.external_url $a.externalURL }}
{{- fail "presets.alerting.externalURL and config.alerting.external_url are both set: set one of them." }}
{{- end }}
{{- else }}
{{- if $a.state.persistence.enabled }}
{{- fail "presets.alerting.state.persistence.enabled=true, but presets.alerting is off: set presets.alerting.enabled=true, or persistence.enabled=false." }}
{{- end }}
{{- range ($v.config | default dict).plugins }}
{{- if and (hasPrefix "monitoring.alerts." .plugin_id) (or (not (hasKey . "enabled")) .enabled) }}
{{- fail (printf "config.plugins enables %s, but presets.alerting is off: the alert state (store, silences, outbox) would have no writable place, the root filesystem being read-only. Set presets.alerting.enabled=true (it mounts a volume for the state and merges your entry by plugin_id)." .plugin_id) }}
{{- end }}
{{- end }}
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
{{- if $s.sharding.enabled }}
{{- $prom := list }}
{{- range $config.plugins }}
{{- if and (eq .plugin_id "monitoring.integration.prometheus") (or (not (hasKey . "enabled")) .enabled) (dig "config" "scrape" nil .) }}
{{- $prom = append $prom . }}
{{- end }}
{{- end }}
{{- if not $prom }}
{{- fail "presets.prometheusScrape.sharding.enabled=true, but no enabled monitoring.integration.prometheus plugin scrapes anything: set presets.prometheusScrape.enabled=true with targets (or fileSD), or presets.prometheusScrape.sharding.enabled=false." }}
{{- end }}
{{- range $prom }}
{{- if hasKey .config.scrape "shard" }}
{{- fail "config.plugins sets scrape.shard of monitoring.integration.prometheus, but presets.prometheusScrape.sharding gives each pod its own shard from its ordinal; a shard in the shared config would make every pod scrape the same one. Remove scrape.shard from config.plugins." }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $enabled }}
{{- fail "no monbridge plugin is enabled, so monbridge would collect and send nothing: enable a preset (presets.hostMetrics in mode daemonset, presets.otlpExport, presets.prometheusScrape) or add an entry to config.plugins (e.g. plugin_id: monitoring.metrics.process)." }}
{{- end }}
{{- end }}
