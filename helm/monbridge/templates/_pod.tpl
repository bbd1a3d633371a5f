{{/* The pod template shared by the DaemonSet, Deployment and StatefulSet. */}}
{{- define "monbridge.podTemplate" -}}
metadata:
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "monbridge.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "monbridge.serviceAccountName" . }}
  # monbridge does not call the Kubernetes API.
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- if .Values.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    runAsNonRoot: true
    {{- with .Values.securityContext.runAsUser }}
    runAsUser: {{ . }}
    {{- end }}
    {{- with .Values.securityContext.runAsGroup }}
    runAsGroup: {{ . }}
    {{- if or (include "monbridge.queuePersistent" $) (include "monbridge.alertStatePersistent" $) }}
    # The PersistentVolumeClaims are made writable for this group.
    fsGroup: {{ . }}
    fsGroupChangePolicy: OnRootMismatch
    {{- end }}
    {{- end }}
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: monbridge
      image: {{ include "monbridge.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - --config
        - /etc/monbridge/config.yaml
        - --log-level
        - {{ .Values.logLevel }}
        - --log-format
        - {{ .Values.logFormat }}
      ports:
        - name: http
          containerPort: {{ .Values.port }}
          protocol: TCP
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        {{- if .Values.presets.hostMetrics.enabled }}
        - name: PROCFS_PATH
          value: /host/proc
        - name: MONBRIDGE_ROOTFS
          value: /host/root
        {{- end }}
        {{- $o := .Values.presets.otlpExport }}
        {{- if $o.enabled }}
        {{- if $o.endpointKey }}
        - name: MONBRIDGE_OTLP_ENDPOINT
          valueFrom:
            secretKeyRef:
              name: {{ $o.secretName }}
              key: {{ $o.endpointKey }}
        {{- end }}
        {{- range $name, $key := $o.headers }}
        - name: {{ include "monbridge.headerEnv" $name }}
          valueFrom:
            secretKeyRef:
              name: {{ $o.secretName }}
              key: {{ $key }}
        {{- end }}
        {{- end }}
        {{- $s := .Values.presets.prometheusScrape }}
        {{- if include "monbridge.remoteWrite" . }}
        {{- $rw := $s.remoteWrite }}
        {{- if $rw.urlKey }}
        - name: MONBRIDGE_RW_URL
          valueFrom:
            secretKeyRef:
              name: {{ $rw.secretName }}
              key: {{ $rw.urlKey }}
        {{- end }}
        {{- range $name, $key := $rw.headers }}
        - name: {{ include "monbridge.rwHeaderEnv" $name }}
          valueFrom:
            secretKeyRef:
              name: {{ $rw.secretName }}
              key: {{ $key }}
        {{- end }}
        {{- if $rw.basicAuth.passwordKey }}
        - name: MONBRIDGE_RW_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ $rw.secretName }}
              key: {{ $rw.basicAuth.passwordKey }}
        {{- end }}
        {{- if $rw.bearerTokenKey }}
        - name: MONBRIDGE_RW_BEARER_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ $rw.secretName }}
              key: {{ $rw.bearerTokenKey }}
        {{- end }}
        {{- end }}
        {{- $a := .Values.presets.alerting }}
        {{- if $a.enabled }}
        {{- range $n := list "webhook" "alertmanager" }}
        {{- $c := get $a $n }}
        {{- if $c.url }}
        {{- range $name, $key := $c.headers }}
        - name: {{ include "monbridge.notifierHeaderEnv" (dict "notifier" (upper $n) "name" $name) }}
          valueFrom:
            secretKeyRef:
              name: {{ $c.secretName }}
              key: {{ $key }}
        {{- end }}
        {{- end }}
        {{- end }}
        {{- if and $a.email.smtp $a.email.passwordKey }}
        - name: MONBRIDGE_SMTP_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ $a.email.secretName }}
              key: {{ $a.email.passwordKey }}
        {{- end }}
        {{- end }}
        {{- if include "monbridge.sharded" . }}
        # Sharded scraping: each pod scrapes shard <ordinal> of replicas, the ordinal taken from
        # HOSTNAME (<fullname>-<ordinal>). Changing replicas changes this, which rolls the pods.
        - name: MONBRIDGE_SHARD_COUNT
          value: {{ .Values.replicas | int | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      livenessProbe:
        httpGet:
          path: /-/healthy
          port: http
          scheme: {{ include "monbridge.scheme" . | upper }}
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /-/ready
          port: http
          scheme: {{ include "monbridge.scheme" . | upper }}
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        capabilities:
          drop: ["ALL"]
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: config
          mountPath: /etc/monbridge
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if .Values.presets.hostMetrics.enabled }}
        - name: host-proc
          mountPath: /host/proc
          readOnly: true
        - name: host-sys
          mountPath: /host/sys
          readOnly: true
        # The node's / for system.filesystem.*: statfs of each node mount at /host/root/<mount point>.
        # HostToContainer: mounts made on the node after the pod started show up here too.
        - name: host-root
          mountPath: /host/root
          mountPropagation: HostToContainer
          readOnly: true
        {{- end }}
        {{- if and $s.enabled $s.fileSD.configMap }}
        - name: file-sd
          mountPath: {{ include "monbridge.fileSDDir" . }}
          readOnly: true
        {{- end }}
        {{- if include "monbridge.remoteWrite" . }}
        # The remote-write queue ({{ if include "monbridge.queuePersistent" . }}a PersistentVolumeClaim per pod{{ else }}an emptyDir{{ end }}).
        - name: queue
          mountPath: {{ include "monbridge.queueDir" . }}
        {{- end }}
        {{- if $a.enabled }}
        # The alert state and notification outbox ({{ if include "monbridge.alertStatePersistent" . }}a PersistentVolumeClaim per pod{{ else }}an emptyDir{{ end }}).
        - name: alert-state
          mountPath: {{ include "monbridge.alertStateDir" . }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "monbridge.fullname" . }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if .Values.presets.hostMetrics.enabled }}
    - name: host-proc
      hostPath:
        path: /proc
        type: Directory
    - name: host-sys
      hostPath:
        path: /sys
        type: Directory
    - name: host-root
      hostPath:
        path: /
        type: Directory
    {{- end }}
    {{- if and $s.enabled $s.fileSD.configMap }}
    - name: file-sd
      configMap:
        name: {{ $s.fileSD.configMap }}
    {{- end }}
    {{- if and (include "monbridge.remoteWrite" .) (not (include "monbridge.queuePersistent" .)) }}
    - name: queue
      emptyDir:
        sizeLimit: {{ include "monbridge.queueSize" . }}
    {{- end }}
    {{- if and .Values.presets.alerting.enabled (not (include "monbridge.alertStatePersistent" .)) }}
    - name: alert-state
      emptyDir:
        sizeLimit: {{ .Values.presets.alerting.state.sizeLimit }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
