{{/* Names and labels. */}}

{{- define "sipwake.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sipwake.fullname" -}}
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

{{- define "sipwake.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sipwake.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sipwake.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sipwake.labels" -}}
helm.sh/chart: {{ include "sipwake.chart" . }}
{{ include "sipwake.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sipwake.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sipwake.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sipwake.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The redis dependency's full name, as that chart computes it. */}}
{{- define "sipwake.redis.fullname" -}}
{{- if .Values.redis.fullnameOverride }}
{{- .Values.redis.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "redis" .Values.redis.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
sipwake.secretMounts: every Secret the pod mounts, as YAML
{mounts: [{volume, secretName, mountPath, items: [{key, path}]}]}, with the
config keys they fill in (field "set": {dotted.key: value}; "fcm" and
"apnsCertificate" entries are gathered into lists by sipwake.config).
*/}}
{{- define "sipwake.secretMounts" -}}
{{- $base := "/etc/sipwake/secrets" }}
{{- $s := .Values.secrets }}
{{- $mounts := list }}
{{- if .Values.sip.tls.secretName }}
{{- $mounts = append $mounts (dict "volume" "sip-tls" "secretName" .Values.sip.tls.secretName "mountPath" "/etc/sipwake/tls" "items" (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key")) "set" (dict "sip.tls.cert_file" "/etc/sipwake/tls/tls.crt" "sip.tls.key_file" "/etc/sipwake/tls/tls.key")) }}
{{- end }}
{{- if $s.apns.existingSecret }}
{{- $dir := printf "%s/apns" $base }}
{{- $mounts = append $mounts (dict "volume" "secret-apns" "secretName" $s.apns.existingSecret "mountPath" $dir "items" (list (dict "key" $s.apns.key "path" $s.apns.key)) "set" (dict "push.apns.key_file" (printf "%s/%s" $dir $s.apns.key))) }}
{{- end }}
{{- if $s.apnsCertificates.existingSecret }}
{{- $dir := printf "%s/apns-certificates" $base }}
{{- $items := list }}
{{- $files := list }}
{{- range $s.apnsCertificates.keys }}
{{- $items = append $items (dict "key" . "path" .) }}
{{- $files = append $files (printf "%s/%s" $dir .) }}
{{- end }}
{{- $mounts = append $mounts (dict "volume" "secret-apns-certificates" "secretName" $s.apnsCertificates.existingSecret "mountPath" $dir "items" $items "apnsCertificates" $files) }}
{{- end }}
{{- range $i, $p := $s.fcm.projects }}
{{- $dir := printf "%s/fcm/%s" $base $p.projectID }}
{{- $mounts = append $mounts (dict "volume" (printf "secret-fcm-%d" $i) "secretName" $p.existingSecret "mountPath" $dir "items" (list (dict "key" $p.key "path" $p.key)) "fcm" (dict "project_id" $p.projectID "credentials_file" (printf "%s/%s" $dir $p.key))) }}
{{- end }}
{{- if $s.webhook.existingSecret }}
{{- $dir := printf "%s/webhook" $base }}
{{- $mounts = append $mounts (dict "volume" "secret-webhook" "secretName" $s.webhook.existingSecret "mountPath" $dir "items" (list (dict "key" $s.webhook.key "path" $s.webhook.key)) "set" (dict "push.webhook.secret_file" (printf "%s/%s" $dir $s.webhook.key))) }}
{{- end }}
{{- if $s.pushCA.existingSecret }}
{{- $dir := printf "%s/push-ca" $base }}
{{- $mounts = append $mounts (dict "volume" "secret-push-ca" "secretName" $s.pushCA.existingSecret "mountPath" $dir "items" (list (dict "key" $s.pushCA.key "path" $s.pushCA.key)) "set" (dict "push.ca_file" (printf "%s/%s" $dir $s.pushCA.key))) }}
{{- end }}
{{- if $s.credentialsKey.existingSecret }}
{{- $dir := printf "%s/credentials-key" $base }}
{{- $mounts = append $mounts (dict "volume" "secret-credentials-key" "secretName" $s.credentialsKey.existingSecret "mountPath" $dir "items" (list (dict "key" $s.credentialsKey.key "path" $s.credentialsKey.key)) "set" (dict "registrar.credentials.key_file" (printf "%s/%s" $dir $s.credentialsKey.key))) }}
{{- end }}
{{- $old := list }}
{{- range $i, $o := $s.credentialsKey.old }}
{{- $dir := printf "%s/credentials-key-old-%d" $base $i }}
{{- $old = append $old (printf "%s/%s" $dir $o.key) }}
{{- $mounts = append $mounts (dict "volume" (printf "secret-credentials-key-old-%d" $i) "secretName" $o.existingSecret "mountPath" $dir "items" (list (dict "key" $o.key "path" $o.key))) }}
{{- end }}
{{- if $old }}
{{- $mounts = append $mounts (dict "set" (dict "registrar.credentials.old_key_files" $old)) }}
{{- end }}
{{- if $s.adminToken.existingSecret }}
{{- $dir := printf "%s/admin" $base }}
{{- $mounts = append $mounts (dict "volume" "secret-admin-token" "secretName" $s.adminToken.existingSecret "mountPath" $dir "items" (list (dict "key" $s.adminToken.key "path" $s.adminToken.key)) "set" (dict "admin.token_file" (printf "%s/%s" $dir $s.adminToken.key))) }}
{{- end }}
{{- $redisSecret := $s.redisPassword.existingSecret }}
{{- $redisKey := $s.redisPassword.key }}
{{- if and (not $redisSecret) .Values.redis.enabled (dig "auth" "enabled" true .Values.redis) }}
{{- $redisSecret = dig "auth" "existingSecret" "" .Values.redis | default (include "sipwake.redis.fullname" .) }}
{{- $redisKey = dig "auth" "existingSecretPasswordKey" "" .Values.redis | default "redis-password" }}
{{- end }}
{{- if $redisSecret }}
{{- $dir := printf "%s/redis" $base }}
{{- $mounts = append $mounts (dict "volume" "secret-redis-password" "secretName" $redisSecret "mountPath" $dir "items" (list (dict "key" $redisKey "path" $redisKey)) "set" (dict "store.redis.password_file" (printf "%s/%s" $dir $redisKey))) }}
{{- end }}
{{- toYaml (dict "mounts" $mounts) }}
{{- end }}

{{/*
sipwake.put sets one key of the config (dict "cfg" $cfg "key" "a.b.c" "value" V
"from" "values that decided it"). A value already in config.* is kept when it
is empty or equal, otherwise the render fails: one setting, one place.
*/}}
{{- define "sipwake.put" -}}
{{- $m := .cfg }}
{{- $path := splitList "." .key }}
{{- range initial $path }}
{{- if not (kindIs "map" (get $m .)) }}
{{- $_ := set $m . dict }}
{{- end }}
{{- $m = get $m . }}
{{- end }}
{{- $leaf := last $path }}
{{- if hasKey $m $leaf }}
{{- $old := get $m $leaf }}
{{- if and (not (empty $old)) (ne (toJson $old) (toJson .value)) }}
{{- fail (printf "config.%s is set to %s, but the chart sets it to %s from %s: remove it from config" .key (toJson $old) (toJson .value) .from) }}
{{- end }}
{{- end }}
{{- $_ := set $m $leaf .value }}
{{- end }}

{{/* sipwake.config: the final sipwake.yaml as YAML. */}}
{{- define "sipwake.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $bind := .Values.sip.bindAddress }}
{{- $listen := list }}
{{- if .Values.sip.udp.enabled }}
{{- $listen = append $listen (printf "udp://%s" (include "sipwake.hostPort" (list $bind .Values.sip.udp.port))) }}
{{- end }}
{{- if .Values.sip.tcp.enabled }}
{{- $listen = append $listen (printf "tcp://%s" (include "sipwake.hostPort" (list $bind .Values.sip.tcp.port))) }}
{{- end }}
{{- if .Values.sip.tls.enabled }}
{{- $listen = append $listen (printf "tls://%s" (include "sipwake.hostPort" (list $bind .Values.sip.tls.port))) }}
{{- end }}
{{- $listen = concat $listen .Values.sip.extraListen }}
{{- if not $listen }}
{{- fail "no SIP listener: enable sip.udp, sip.tcp or sip.tls, or list sip.extraListen" }}
{{- end }}
{{- include "sipwake.put" (dict "cfg" $cfg "key" "sip.listen" "value" $listen "from" "sip.udp, sip.tcp, sip.tls and sip.extraListen") }}
{{- include "sipwake.put" (dict "cfg" $cfg "key" "ops.listen" "value" (printf ":%d" (int .Values.ops.port)) "from" "ops.port") }}
{{- $fcm := list }}
{{- $certs := list }}
{{- range (include "sipwake.secretMounts" . | fromYaml).mounts }}
{{- range $k, $v := (get . "set" | default dict) }}
{{- include "sipwake.put" (dict "cfg" $cfg "key" $k "value" $v "from" "secrets.* / sip.tls.secretName") }}
{{- end }}
{{- with get . "fcm" }}
{{- $fcm = append $fcm . }}
{{- end }}
{{- with get . "apnsCertificates" }}
{{- $certs = concat $certs . }}
{{- end }}
{{- end }}
{{- if $fcm }}
{{- include "sipwake.put" (dict "cfg" $cfg "key" "push.fcm.projects" "value" $fcm "from" "secrets.fcm.projects") }}
{{- end }}
{{- if $certs }}
{{- include "sipwake.put" (dict "cfg" $cfg "key" "push.apns.certificates" "value" $certs "from" "secrets.apnsCertificates") }}
{{- end }}
{{- if .Values.redis.enabled }}
{{- $port := dig "master" "service" "ports" "redis" 6379 .Values.redis | int }}
{{- include "sipwake.put" (dict "cfg" $cfg "key" "store.driver" "value" "redis" "from" "redis.enabled") }}
{{- include "sipwake.put" (dict "cfg" $cfg "key" "store.redis.addresses" "value" (list (printf "%s-master:%d" (include "sipwake.redis.fullname" .) $port)) "from" "redis.enabled") }}
{{- end }}
{{- if and .Values.sip.tls.enabled (not (dig "sip" "tls" "cert_file" "" $cfg)) }}
{{- fail "sip.tls.enabled needs a certificate: set sip.tls.secretName (a kubernetes.io/tls Secret), or config.sip.tls.cert_file and key_file with extraVolumes" }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
sipwake.optional: a value that may be null or left out (Helm drops a key set
to null), as a string; "" when unset. (list $map "key")
*/}}
{{- define "sipwake.optional" -}}
{{- $v := get (index . 0) (index . 1) }}
{{- if not (kindIs "invalid" $v) }}
{{- toString $v }}
{{- end }}
{{- end }}

{{/* host:port, with brackets around an IPv6 host. */}}
{{- define "sipwake.hostPort" -}}
{{- $host := index . 0 }}
{{- $port := index . 1 | int }}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) }}
{{- printf "[%s]:%d" $host $port }}
{{- else }}
{{- printf "%s:%d" $host $port }}
{{- end }}
{{- end }}

{{/* The store driver the pods end up with. */}}
{{- define "sipwake.storeDriver" -}}
{{- dig "store" "driver" "embedded" (include "sipwake.config" . | fromYaml) }}
{{- end }}

{{/*
sipwake.seconds: a Go duration ("90s", "1m30s", "500ms") in whole seconds,
rounded up.
*/}}
{{- define "sipwake.seconds" -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]*\\.?[0-9]+(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $num := regexFind "^[0-9]*\\.?[0-9]+" . }}
{{- $unit := trimPrefix $num . }}
{{- $total = addf $total (mulf (float64 $num) (get $units $unit)) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/*
sipwake.advertise: the value of SIPWAKE_SIP_ADVERTISE as a YAML env entry list
(empty when sipwake keeps config.sip.advertise or its default).
*/}}
{{- define "sipwake.advertiseEnv" -}}
{{- $a := .Values.sip.advertise }}
{{- $mode := $a.mode }}
{{- $svc := .Values.service.sip }}
{{- $port := int $a.port }}
{{- if eq $mode "auto" }}
{{- if dig "sip" "advertise" "" (.Values.config | default dict) }}
{{- $mode = "none" }}
{{- else if .Values.hostNetwork }}
{{- $mode = "hostIP" }}
{{- else if and $svc.enabled (eq $svc.type "NodePort") }}
{{- $mode = "hostIP" }}
{{- $udp := include "sipwake.optional" (list $svc.nodePorts "udp") }}
{{- $tcp := include "sipwake.optional" (list $svc.nodePorts "tcp") }}
{{- if $port }}
{{- else if and $udp (not .Values.sip.tcp.enabled) }}
{{- $port = int $udp }}
{{- else if and $tcp (not .Values.sip.udp.enabled) }}
{{- $port = int $tcp }}
{{- else if and $udp (eq $udp $tcp) }}
{{- $port = int $udp }}
{{- end }}
{{- else if and $svc.enabled (eq $svc.type "LoadBalancer") $svc.loadBalancerIP }}
{{- $mode = "address" }}
{{- $a = dict "address" $svc.loadBalancerIP }}
{{- else }}
{{- $mode = "none" }}
{{- end }}
{{- end }}
{{- $suffix := ternary (printf ":%d" $port) "" (gt $port 0) }}
{{- if eq $mode "hostIP" }}
- name: SIPWAKE_POD_HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
- name: SIPWAKE_SIP_ADVERTISE
  value: {{ printf "$(SIPWAKE_POD_HOST_IP)%s" $suffix | quote }}
{{- else if eq $mode "podIP" }}
- name: SIPWAKE_POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: SIPWAKE_SIP_ADVERTISE
  value: {{ printf "$(SIPWAKE_POD_IP)%s" $suffix | quote }}
{{- else if eq $mode "address" }}
{{- if not $a.address }}
{{- fail "sip.advertise.mode address needs sip.advertise.address" }}
{{- end }}
- name: SIPWAKE_SIP_ADVERTISE
  value: {{ printf "%s%s" $a.address $suffix | quote }}
{{- end }}
{{- end }}

{{/* Checks across values that the schema cannot express. */}}
{{- define "sipwake.validate" -}}
{{- $driver := include "sipwake.storeDriver" . }}
{{- if and (gt (int .Values.replicaCount) 1) (ne $driver "redis") }}
{{- fail (printf "replicaCount %d needs store.driver redis (the store is %q, which serves one node): set config.store.driver=redis and config.store.redis.addresses, or redis.enabled=true" (int .Values.replicaCount) $driver) }}
{{- end }}
{{- $p := .Values.persistence }}
{{- if and $p.enabled (gt (int .Values.replicaCount) 1) (not (has "ReadWriteMany" $p.accessModes)) }}
{{- fail (printf "persistence: %d pods cannot share a %s volume; with the redis store none is needed (persistence.enabled=false), or use ReadWriteMany" (int .Values.replicaCount) (join "," $p.accessModes)) }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.ops.enabled) }}
{{- fail "serviceMonitor.enabled needs service.ops.enabled (the ServiceMonitor scrapes that Service)" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $min := include "sipwake.optional" (list $pdb "minAvailable") }}
{{- $max := include "sipwake.optional" (list $pdb "maxUnavailable") }}
{{- if and $pdb.enabled $min $max }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- if and $pdb.enabled (not $min) (not $max) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable" }}
{{- end }}
{{- end }}

{{/* An int-or-percent value: a number as is, "50%" quoted. */}}
{{- define "sipwake.intOrString" -}}
{{- if regexMatch "^[0-9]+$" . }}{{ . }}{{ else }}{{ . | quote }}{{ end }}
{{- end }}
