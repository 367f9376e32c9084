{{/* Names and labels. */}}
{{- define "inferwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inferwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "inferwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "inferwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "inferwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: detector
{{- end -}}

{{/* The container security context every container of the chart runs with. */}}
{{- define "inferwatch.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* replicas <= partitions on Kafka, one replica on the embedded bus. */}}
{{- define "inferwatch.checkReplicas" -}}
{{- if .Values.kafka.enabled -}}
{{- if gt (int .Values.replicas) (int .Values.kafka.partitions) -}}
{{- fail (printf "replicas (%d) must not exceed kafka.partitions (%d): detector replicas share the consumer group inferwatch-detect, and a replica beyond the partition count gets no partition" (int .Values.replicas) (int .Values.kafka.partitions)) -}}
{{- end -}}
{{- else if ne (int .Values.replicas) 1 -}}
{{- fail (printf "replicas (%d) must be 1 without Kafka (kafka.enabled: false): the embedded bus lives in one process" (int .Values.replicas)) -}}
{{- end -}}
{{- if and (not .Values.server.allowUnauthenticated) (not .Values.server.tokenSecret.name) -}}
{{- fail "server.tokenSecret.name is required (the daemon listens beyond loopback), unless server.allowUnauthenticated: true" -}}
{{- end -}}
{{- end -}}

{{/* Where each channel kind's secret goes in the daemon's config. */}}
{{- define "inferwatch.channelSecretKey" -}}
{{- get (dict "webhook" "secret_file" "slack" "url_file" "pagerduty" "routing_key_file") . -}}
{{- end -}}

{{/* The daemon's config file (inferwatch.yaml). */}}
{{- define "inferwatch.daemonConfig" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $models := list -}}
{{- range .Values.models -}}
{{- $m := deepCopy . -}}
{{- if not (hasPrefix "/" .profile) -}}
{{- $_ := set $m "profile" (printf "/etc/inferwatch/profiles/%s" .profile) -}}
{{- end -}}
{{- $models = append $models $m -}}
{{- end -}}
{{- $_ := set $cfg "models" $models -}}
{{- $server := dict "host" "0.0.0.0" "port" 9464 -}}
{{- if .Values.server.tokenSecret.name -}}
{{- $_ := set $server "token_file" "/var/run/secrets/inferwatch/server/token" -}}
{{- end -}}
{{- if .Values.server.allowUnauthenticated -}}
{{- $_ := set $server "allow_unauthenticated" true -}}
{{- end -}}
{{- $_ := set $cfg "server" $server -}}
{{- if .Values.kafka.enabled -}}
{{- $_ := set $cfg "kafka" (dict "bootstrap" .Values.kafka.bootstrap "group" .Values.kafka.group "partitions" (int .Values.kafka.partitions) "create_topics" .Values.kafka.createTopics "client" .Values.kafka.client) -}}
{{- $_ := set $cfg "topics" .Values.topics -}}
{{- end -}}
{{- $alerts := deepCopy (get $cfg "alerts" | default dict) -}}
{{- $channels := list -}}
{{- range .Values.alertChannels -}}
{{- $c := deepCopy (.settings | default dict) -}}
{{- $_ := set $c "type" .type -}}
{{- if .url -}}{{- $_ := set $c "url" .url -}}{{- end -}}
{{- if .secret -}}
{{- $_ := set $c (include "inferwatch.channelSecretKey" .type) (printf "/var/run/secrets/inferwatch/channels/%s/%s" .name .secret.key) -}}
{{- end -}}
{{- $channels = append $channels $c -}}
{{- end -}}
{{- if $channels -}}
{{- $_ := set $alerts "channels" $channels -}}
{{- end -}}
{{- if $alerts -}}
{{- $_ := set $cfg "alerts" $alerts -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The pod-template fragment users paste into their model's pod: label, native sidecar, volumes. */}}
{{- define "inferwatch.sidecarSnippet" -}}
{{- $s := .Values.sidecar -}}
metadata:
  labels:
    {{ .Values.networkPolicy.sidecarLabel.key }}: {{ .Values.networkPolicy.sidecarLabel.value | quote }}
spec:
  initContainers:
    # A native sidecar (Kubernetes >= 1.29): an init container with restartPolicy Always starts before the
    # model's containers, runs beside them for the pod's life and stops after them.
    - name: inferwatch-sidecar
      image: {{ printf "%s:%s" $s.image.repository $s.image.tag | quote }}
      imagePullPolicy: {{ $s.image.pullPolicy }}
      restartPolicy: Always
      args:
        - --upstream={{ $s.upstream }}
        - --listen=0.0.0.0:{{ $s.listenPort }}
        - --admin=0.0.0.0:{{ $s.adminPort }}
        {{- if .Values.kafka.enabled }}
        - --kafka={{ .Values.kafka.bootstrap }}
        - --topic={{ $s.topic }}
        {{- else }}
        - --ingest=http://{{ include "inferwatch.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}
        - --ingest-token-file=/var/run/secrets/inferwatch/ingest/token
        {{- end }}
        - --spool=/var/spool/inferwatch
        - --spool-max-bytes={{ int64 $s.spoolMaxBytes }}
        - --admin-token-file=/var/run/secrets/inferwatch/admin/token
        {{- range $name, $target := $s.models }}
        - --model={{ $name }}={{ $target }}
        {{- end }}
      ports:
        - name: iw-proxy
          containerPort: {{ $s.listenPort }}
        - name: iw-admin
          containerPort: {{ $s.adminPort }}
      startupProbe:
        httpGet:
          path: /healthz
          port: iw-admin
        periodSeconds: 1
        failureThreshold: 30
      livenessProbe:
        httpGet:
          path: /healthz
          port: iw-admin
        periodSeconds: 10
      readinessProbe:
        httpGet:
          path: /readyz
          port: iw-admin
        periodSeconds: 5
      resources:
        {{- toYaml $s.resources | nindent 8 }}
      securityContext:
        {{- include "inferwatch.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: inferwatch-spool
          mountPath: /var/spool/inferwatch
        - name: inferwatch-admin-token
          mountPath: /var/run/secrets/inferwatch/admin
          readOnly: true
        {{- if not .Values.kafka.enabled }}
        - name: inferwatch-ingest-token
          mountPath: /var/run/secrets/inferwatch/ingest
          readOnly: true
        {{- end }}
  volumes:
    - name: inferwatch-spool
      emptyDir:
        sizeLimit: {{ $s.spoolSizeLimit }}
    - name: inferwatch-admin-token
      secret:
        secretName: {{ $s.adminTokenSecret.name }}
        items:
          - key: {{ $s.adminTokenSecret.key }}
            path: token
    {{- if not .Values.kafka.enabled }}
    - name: inferwatch-ingest-token
      secret:
        secretName: {{ .Values.server.tokenSecret.name }}
        items:
          - key: {{ .Values.server.tokenSecret.key }}
            path: token
    {{- end }}
{{- end -}}
