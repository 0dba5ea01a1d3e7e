{{/*
Names. The full name is "<release>-safekeep" unless the release already says "safekeep", and is
cut to 63 characters (the DNS label limit every name here must meet).
*/}}
{{- define "safekeep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "safekeep.fullname" -}}
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

{{/* A component's name, e.g. "<fullname>-api"; the full name leaves room for the suffix. */}}
{{- define "safekeep.componentName" -}}
{{- printf "%s-%s" (include "safekeep.fullname" .root | trunc 52 | trimSuffix "-") .component }}
{{- end }}

{{- define "safekeep.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "safekeep.labels" -}}
helm.sh/chart: {{ include "safekeep.chart" . }}
{{ include "safekeep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: safekeep
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "safekeep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "safekeep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "api"). */}}
{{- define "safekeep.componentLabels" -}}
{{ include "safekeep.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "safekeep.componentSelectorLabels" -}}
{{ include "safekeep.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "safekeep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "safekeep.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The migration hook runs before the release's own resources exist, so on a first install the
chart's ServiceAccount is not there yet: use one that is.
*/}}
{{- define "safekeep.migrationServiceAccountName" -}}
{{- if .Values.migration.serviceAccountName }}
{{- .Values.migration.serviceAccountName }}
{{- else if not .Values.serviceAccount.create }}
{{- default "default" .Values.serviceAccount.name }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{- define "safekeep.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "safekeep.configMapName" -}}
{{- include "safekeep.fullname" . }}
{{- end }}

{{- define "safekeep.secretName" -}}
{{- default (include "safekeep.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Where the extra CA certificate is mounted, when one is configured. */}}
{{- define "safekeep.caBundlePath" -}}
{{- printf "/etc/safekeep/ca/%s" .Values.caBundle.key }}
{{- end }}

{{/*
The development master key Safekeep ships for `make run` (safekeep/settings.py DEV_MASTER_KEY):
the chart refuses it, as Safekeep itself does in production.
*/}}
{{- define "safekeep.devMasterKey" -}}
c2FmZWtlZXAtZGV2ZWxvcG1lbnQtbWFzdGVyLWtleSE=
{{- end }}

{{/*
Non-secret settings: SAFEKEEP_* name -> value. Empty values are left out so that Safekeep's
own defaults apply. Integers go through int64 because helm reads YAML numbers as floats
(200000 would otherwise print as 2e+05, which an int setting refuses).
*/}}
{{- define "safekeep.config" -}}
{{- $c := .Values.config }}
{{- $out := dict
  "SAFEKEEP_ENV" $c.env
  "SAFEKEEP_PUBLIC_URL" $c.publicUrl
  "SAFEKEEP_NOTIFICATION_BASE_URL" $c.notificationBaseUrl
  "SAFEKEEP_APP_CLIENT_ID" $c.appClientId
  "SAFEKEEP_BLOBSTORE_URL" $c.blobstoreUrl
  "SAFEKEEP_S3_ENDPOINT_URL" $c.s3EndpointUrl
  "SAFEKEEP_S3_REGION" $c.s3Region
  "SAFEKEEP_SEARCH_INDEX_PREFIX" $c.searchIndexPrefix
  "SAFEKEEP_LOGIN_URL" $c.loginUrl
  "SAFEKEEP_GRAPH_URL" $c.graphUrl
  "SAFEKEEP_STRIPE_API_BASE" $c.stripeApiBase
  "SAFEKEEP_LOG_LEVEL" $c.logLevel
}}
{{- if not (kindIs "invalid" $c.schedulerIntervalSeconds) }}
{{- $_ := set $out "SAFEKEEP_SCHEDULER_INTERVAL_SECONDS" (toString $c.schedulerIntervalSeconds) }}
{{- end }}
{{- if not (kindIs "invalid" $c.notificationDebounceSeconds) }}
{{- $_ := set $out "SAFEKEEP_NOTIFICATION_DEBOUNCE_SECONDS" (toString $c.notificationDebounceSeconds) }}
{{- end }}
{{- if not (kindIs "invalid" $c.exportTtlHours) }}
{{- $_ := set $out "SAFEKEEP_EXPORT_TTL_HOURS" (int64 $c.exportTtlHours | toString) }}
{{- end }}
{{- if not (kindIs "invalid" $c.searchBodyMaxChars) }}
{{- $_ := set $out "SAFEKEEP_SEARCH_BODY_MAX_CHARS" (int64 $c.searchBodyMaxChars | toString) }}
{{- end }}
{{- if not (kindIs "invalid" $c.logJson) }}
{{- $_ := set $out "SAFEKEEP_LOG_JSON" (toString $c.logJson) }}
{{- end }}
{{- if or .Values.caBundle.configMap .Values.caBundle.secret }}
{{- $_ := set $out "SAFEKEEP_CA_BUNDLE" (include "safekeep.caBundlePath" .) }}
{{- end }}
{{- range $name, $value := $c.extra }}
{{- $_ := set $out $name (toString $value) }}
{{- end }}
{{- range $name := keys $out | sortAlpha }}
{{- $value := get $out $name }}
{{- if ne (toString $value) "" }}
{{ $name }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret settings: variable name -> value, empty ones left out. */}}
{{- define "safekeep.secretData" -}}
{{- $s := .Values.secrets }}
{{- $out := dict
  "SAFEKEEP_MASTER_KEY" $s.masterKey
  "SAFEKEEP_PREVIOUS_MASTER_KEYS" $s.previousMasterKeys
  "SAFEKEEP_APP_CLIENT_SECRET" $s.appClientSecret
  "SAFEKEEP_DATABASE_URL" $s.databaseUrl
  "SAFEKEEP_BROKER_URL" $s.brokerUrl
  "SAFEKEEP_REDIS_URL" $s.redisUrl
  "SAFEKEEP_SEARCH_URL" $s.searchUrl
  "SAFEKEEP_STRIPE_API_KEY" $s.stripeApiKey
  "SAFEKEEP_STRIPE_WEBHOOK_SECRET" $s.stripeWebhookSecret
  "SAFEKEEP_METRICS_TOKEN" $s.metricsToken
  "AWS_ACCESS_KEY_ID" $s.awsAccessKeyId
  "AWS_SECRET_ACCESS_KEY" $s.awsSecretAccessKey
}}
{{- range $name := keys $out | sortAlpha }}
{{- $value := get $out $name }}
{{- if $value }}
{{ $name }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuse to render a release that could not run, with a message that says what to set. The
schema checks shapes; this checks what only makes sense together.
*/}}
{{- define "safekeep.validate" -}}
{{- $c := .Values.config }}
{{- $s := .Values.secrets }}
{{- if not $s.existingSecret }}
{{- if not $s.masterKey }}
{{- fail "safekeep: secrets.masterKey is required (or name your own Secret in secrets.existingSecret). Generate one with: python3 -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' and keep a copy outside the cluster: without it no backup can be read." }}
{{- end }}
{{- if eq $s.masterKey (include "safekeep.devMasterKey" .) }}
{{- fail "safekeep: secrets.masterKey is Safekeep's public development key; generate a real one" }}
{{- end }}
{{- range $key, $name := dict "appClientSecret" "SAFEKEEP_APP_CLIENT_SECRET" "databaseUrl" "SAFEKEEP_DATABASE_URL" "brokerUrl" "SAFEKEEP_BROKER_URL" "searchUrl" "SAFEKEEP_SEARCH_URL" }}
{{- if not (get $s $key) }}
{{- fail (printf "safekeep: secrets.%s (%s) is required (or name your own Secret in secrets.existingSecret)" $key $name) }}
{{- end }}
{{- end }}
{{- if and (hasPrefix "amqp" $s.brokerUrl) (not $s.redisUrl) }}
{{- fail "safekeep: with a RabbitMQ broker (amqp://), set secrets.redisUrl too: Microsoft Graph throttling limits are shared by all workers through Redis" }}
{{- end }}
{{- if and (or $s.awsAccessKeyId $s.awsSecretAccessKey) (not (and $s.awsAccessKeyId $s.awsSecretAccessKey)) }}
{{- fail "safekeep: set both secrets.awsAccessKeyId and secrets.awsSecretAccessKey, or neither" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not $s.metricsToken) }}
{{- fail "safekeep: serviceMonitor.enabled needs secrets.metricsToken, the token Prometheus presents to the API's /metrics (at least 32 characters: openssl rand -hex 32)" }}
{{- end }}
{{- else }}
{{- /* With a live cluster (install, upgrade, --dry-run=server) check the Secret's keys. */}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $s.existingSecret }}
{{- if $existing }}
{{- $needed := list "SAFEKEEP_MASTER_KEY" "SAFEKEEP_APP_CLIENT_SECRET" "SAFEKEEP_DATABASE_URL" "SAFEKEEP_BROKER_URL" "SAFEKEEP_SEARCH_URL" }}
{{- if .Values.serviceMonitor.enabled }}
{{- $needed = append $needed "SAFEKEEP_METRICS_TOKEN" }}
{{- end }}
{{- range $name := $needed }}
{{- if not (hasKey ($existing.data | default dict) $name) }}
{{- fail (printf "safekeep: Secret %q has no key %s" $s.existingSecret $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key, $name := dict "publicUrl" "SAFEKEEP_PUBLIC_URL" "appClientId" "SAFEKEEP_APP_CLIENT_ID" "blobstoreUrl" "SAFEKEEP_BLOBSTORE_URL" }}
{{- if not (get $c $key) }}
{{- fail (printf "safekeep: config.%s (%s) is required" $key $name) }}
{{- end }}
{{- end }}
{{- if and (eq $c.env "production") $c.notificationBaseUrl (not (hasPrefix "https://" $c.notificationBaseUrl)) }}
{{- fail "safekeep: config.notificationBaseUrl must be https:// in production: Microsoft Graph delivers change notifications over https only" }}
{{- end }}
{{- if and .Values.caBundle.configMap .Values.caBundle.secret }}
{{- fail "safekeep: name caBundle.configMap or caBundle.secret, not both" }}
{{- end }}
{{- range $component := list "api" "worker" "scheduler" }}
{{- $pdb := (get $.Values $component).podDisruptionBudget }}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail (printf "safekeep: %s.podDisruptionBudget takes minAvailable or maxUnavailable, not both" $component) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every Safekeep pod; call with (dict "root" $ "values" .Values.api). */}}
{{- define "safekeep.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ .serviceAccountName | default (include "safekeep.serviceAccountName" $root) }}
automountServiceAccountToken: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- tpl (toYaml .) $root | nindent 2 }}
{{- end }}
{{- end }}

{{/* Container-level settings shared by every Safekeep container. */}}
{{- define "safekeep.containerCommon" -}}
{{- $root := .root -}}
image: {{ include "safekeep.image" $root | quote }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ .configMapName | default (include "safekeep.configMapName" $root) }}
  - secretRef:
      name: {{ .secretName | default (include "safekeep.secretName" $root) }}
  {{- with $root.Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $root.Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if or $root.Values.caBundle.configMap $root.Values.caBundle.secret }}
  - name: ca-bundle
    mountPath: /etc/safekeep/ca
    readOnly: true
  {{- end }}
{{- end }}

{{/* The volumes behind containerCommon's mounts. */}}
{{- define "safekeep.volumes" -}}
{{- $root := .root -}}
volumes:
  - name: tmp
    emptyDir:
      {{- with .values.tmpSizeLimit }}
      sizeLimit: {{ . }}
      {{- end }}
  {{- if $root.Values.caBundle.configMap }}
  - name: ca-bundle
    configMap:
      name: {{ $root.Values.caBundle.configMap }}
      items:
        - key: {{ $root.Values.caBundle.key }}
          path: {{ $root.Values.caBundle.key }}
  {{- else if $root.Values.caBundle.secret }}
  - name: ca-bundle
    secret:
      secretName: {{ $root.Values.caBundle.secret }}
      items:
        - key: {{ $root.Values.caBundle.key }}
          path: {{ $root.Values.caBundle.key }}
  {{- end }}
{{- end }}

{{/*
Pod annotations (the component's win over the global ones): the checksums roll every pod when the chart's ConfigMap or Secret changes
(a Secret of your own is not seen: restart the deployments after changing it).
*/}}
{{- define "safekeep.podAnnotations" -}}
{{- $out := merge (deepCopy (.values.podAnnotations | default dict)) .root.Values.podAnnotations }}
{{- $_ := set $out "checksum/config" (include "safekeep.config" .root | sha256sum) }}
{{- if not .root.Values.secrets.existingSecret }}
{{- $_ := set $out "checksum/secret" (include "safekeep.secretData" .root | sha256sum) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Pod labels: the selector's labels always win, then the component's, then the global ones. */}}
{{- define "safekeep.podLabels" -}}
{{- $out := include "safekeep.componentSelectorLabels" (dict "root" .root "component" .component) | fromYaml }}
{{- $_ := set $out "app.kubernetes.io/version" (.root.Values.image.tag | default .root.Chart.AppVersion) }}
{{- $out = merge $out (deepCopy (.values.podLabels | default dict)) .root.Values.podLabels }}
{{- toYaml $out }}
{{- end }}
