{{/*
Names and labels shared by every object of the chart, and the pod template
every stage uses: one binary, one ConfigMap of shared OUTBOX_* variables,
secrets by reference, the ops server on the metrics port, non-root.
*/}}

{{- define "outbox.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "outbox.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "outbox.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "outbox.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: outbox
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "relay"). */}}
{{- define "outbox.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outbox.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "outbox.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "outbox.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "outbox.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The metrics Service of one component: headless, and it publishes pods that
are not ready, so Prometheus also scrapes a standby relay or a sink waiting
out a Kafka outage. (dict "root" $ "component" "relay")
*/}}
{{- define "outbox.metricsService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "outbox.fullname" .root }}-{{ .component }}-metrics
  labels:
    {{- include "outbox.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    outbox-metrics: "true"
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    {{- include "outbox.selectorLabels" . | nindent 4 }}
  ports:
    - name: metrics
      port: {{ .root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
{{- end -}}

{{/*
A PodDisruptionBudget: (dict "root" $ "component" "relay" "pdb" .Values.relay.pdb).
*/}}
{{- define "outbox.pdb" -}}
{{- if .pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "outbox.fullname" .root }}-{{ .component }}
  labels:
    {{- include "outbox.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if hasKey .pdb "minAvailable" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "outbox.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
The pod template of one stage. Keys: root, component, args (the binary's
arguments), values (the stage's values: resources, extraArgs, extraEnv,
terminationGracePeriodSeconds), database (needs OUTBOX_DATABASE_URL), kafka
(talks to Kafka: the SASL password and the TLS files),
liveness and readiness (probe paths on the metrics port, or "tcp:PORTNAME"),
env, ports, volumes and mounts (extra lists), envFrom (a Secret name).
*/}}
{{- define "outbox.podTemplate" -}}
{{- $root := .root -}}
{{- $v := .values -}}
metadata:
  labels:
    {{- include "outbox.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "outbox.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds | default 30 }}
  {{- with .affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .container | default .component }}
      image: {{ include "outbox.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: {{ toJson $root.Values.image.command }}
      args: {{ toJson (concat .args ($v.extraArgs | default list)) }}
      envFrom:
        - configMapRef:
            name: {{ include "outbox.fullname" $root }}-env
        {{- with .envFrom }}
        - secretRef:
            name: {{ . }}
        {{- end }}
      env:
        {{- if .database }}
        - name: OUTBOX_DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {{ required "database.existingSecret names the Secret with the Postgres URL" $root.Values.database.existingSecret }}
              key: {{ $root.Values.database.secretKey }}
        {{- end }}
        {{- if and .kafka $root.Values.kafka.sasl.mechanism }}
        - name: OUTBOX_KAFKA_SASL_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ required "kafka.sasl.existingSecret names the Secret with the SASL password" $root.Values.kafka.sasl.existingSecret }}
              key: {{ $root.Values.kafka.sasl.passwordKey }}
        {{- end }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $root.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ $root.Values.metrics.port }}
          protocol: TCP
        {{- with .ports }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        {{- include "outbox.probe" (dict "path" .liveness) | nindent 8 }}
        periodSeconds: 2
        failureThreshold: 60
      livenessProbe:
        {{- include "outbox.probe" (dict "path" .liveness) | nindent 8 }}
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      readinessProbe:
        {{- include "outbox.probe" (dict "path" .readiness) | nindent 8 }}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      resources:
        {{- toYaml (default $root.Values.resources $v.resources) | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if and .kafka $root.Values.kafka.tls.existingSecret }}
        - name: kafka-tls
          mountPath: /etc/outbox/kafka-tls
          readOnly: true
        {{- end }}
        {{- with .mounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if and .kafka $root.Values.kafka.tls.existingSecret }}
    - name: kafka-tls
      secret:
        secretName: {{ $root.Values.kafka.tls.existingSecret }}
    {{- end }}
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* A probe: an HTTP GET of path on the metrics port, or "tcp:PORTNAME". */}}
{{- define "outbox.probe" -}}
{{- if hasPrefix "tcp:" .path -}}
tcpSocket:
  port: {{ trimPrefix "tcp:" .path }}
{{- else -}}
httpGet:
  path: {{ .path }}
  port: metrics
{{- end -}}
{{- end -}}
