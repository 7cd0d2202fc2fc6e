{{/* The chart's name, or nameOverride. */}}
{{- define "outboxd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's resource name: fullnameOverride, else <release>-outboxd (or the release's
name alone when it already contains the chart's name). */}}
{{- define "outboxd.fullname" -}}
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

{{- define "outboxd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels, on every resource. */}}
{{- define "outboxd.labels" -}}
helm.sh/chart: {{ include "outboxd.chart" . }}
{{ include "outboxd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: outboxd
{{- end }}

{{/* Labels that select the relay's pod (immutable in the Deployment's selector). */}}
{{- define "outboxd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outboxd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The relay groups: each entry of .Values.groups, or, without groups, one unnamed group
running values.config as it is. */}}
{{- define "outboxd.groups" -}}
{{- $names := list }}
{{- range .Values.groups }}
{{- $name := required "each groups entry needs a name" .name }}
{{- if has $name $names }}
{{- fail (printf "groups: %q appears twice" $name) }}
{{- end }}
{{- $names = append $names $name }}
{{- end }}
{{- toJson (dict "groups" (.Values.groups | default (list (dict "name" "")))) }}
{{- end }}

{{/* A group's resource name: the release's, suffixed with the group's name. Takes
(dict "root" $ "group" $group). */}}
{{- define "outboxd.groupFullname" -}}
{{- if .group.name }}
{{- printf "%s-%s" (include "outboxd.fullname" .root | trunc 50 | trimSuffix "-") .group.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "outboxd.fullname" .root }}
{{- end }}
{{- end }}

{{/* Labels selecting a group's pods: a named group's carry its name as the component. */}}
{{- define "outboxd.groupSelectorLabels" -}}
{{ include "outboxd.selectorLabels" .root }}
{{- if .group.name }}
app.kubernetes.io/component: {{ .group.name }}
{{- end }}
{{- end }}

{{- define "outboxd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the secret files are mounted: one projected volume of the Postgres password, the Kafka
secret properties and the Kafka secret files. */}}
{{- define "outboxd.secretsDir" -}}/run/secrets/outboxd{{- end }}

{{/* Values parsed from YAML are float64 even when whole, and toToml would write 4096 as 4096.0
and 67108864 as 6.7108864e+07: turn whole floats back into integers, so that the file reads as the
values were written. In place (the argument is a deep copy); recurses into sub-tables and arrays of
tables. */}}
{{- define "outboxd.wholeNumbers" -}}
{{- $table := . }}
{{- range $key, $value := $table }}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $_ := set $table $key (int64 $value) }}
{{- else if kindIs "map" $value }}
{{- include "outboxd.wholeNumbers" $value }}
{{- else if kindIs "slice" $value }}
{{- range $value }}{{ if kindIs "map" . }}{{ include "outboxd.wholeNumbers" . }}{{ end }}{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/* outboxd.toml of a group: values.config, with the group's config over it and the keys the
chart owns set. Takes (dict "root" $ "group" $group). A named group must give its own relay name,
slot and publications: each group is a relay of its own (README: slot groups). */}}
{{- define "outboxd.config" -}}
{{- $group := .group }}
{{- $config := mergeOverwrite (deepCopy (default dict .root.Values.config)) (deepCopy (default dict $group.config)) }}
{{- if $group.name }}
{{- $own := default dict $group.config }}
{{- if not (dig "relay" "name" "" $own) }}
{{- fail (printf "groups: %q needs its own config.relay.name (the checkpoint's key and the Kafka transactional id)" $group.name) }}
{{- end }}
{{- if and (ne (dig "relay" "mode" "logical" $config) "poll") (not (dig "postgres" "slot" "" $own)) }}
{{- fail (printf "groups: %q needs its own config.postgres.slot and config.postgres.publications" $group.name) }}
{{- end }}
{{- end }}
{{- with .root }}
{{- $secrets := include "outboxd.secretsDir" . }}
{{- $metrics := default dict $config.metrics }}
{{- $_ := set $metrics "listen" "0.0.0.0:9187" }}
{{- $_ := set $config "metrics" $metrics }}
{{- if .Values.postgres.passwordSecret.name }}
{{- $postgres := default dict $config.postgres }}
{{- $_ := set $postgres "password_file" (printf "%s/postgres/password" $secrets) }}
{{- $_ := set $config "postgres" $postgres }}
{{- end }}
{{- if .Values.kafka.secretProperties }}
{{- $kafka := default dict $config.kafka }}
{{- $files := dict }}
{{- range .Values.kafka.secretProperties }}
{{- $property := required "each kafka.secretProperties entry needs a property (e.g. sasl.password)" .property }}
{{- $_ := set $files $property (printf "%s/kafka/%s" $secrets $property) }}
{{- end }}
{{- $_ := set $kafka "property_files" $files }}
{{- $_ := set $config "kafka" $kafka }}
{{- end }}
{{- if .Values.kafka.secretFiles }}
{{- $kafka := default dict $config.kafka }}
{{- range .Values.kafka.secretFiles }}
{{- $setting := required "each kafka.secretFiles entry needs a setting (e.g. sasl.password_file)" .setting }}
{{- if not (has $setting (list "tls.ca_file" "tls.certificate_file" "tls.key_file" "tls.key_password_file" "sasl.password_file" "sasl.client_secret_file")) }}
{{- fail (printf "kafka.secretFiles: %q is not a file setting of [kafka.tls] or [kafka.sasl]" $setting) }}
{{- end }}
{{- $parts := splitList "." $setting }}
{{- $section := default dict (get $kafka (index $parts 0)) }}
{{- $_ := set $section (index $parts 1) (printf "%s/kafka/%s" $secrets $setting) }}
{{- $_ := set $kafka (index $parts 0) $section }}
{{- end }}
{{- $_ := set $config "kafka" $kafka }}
{{- end }}
{{- include "outboxd.wholeNumbers" $config }}
{{- toToml $config }}
{{- end }}
{{- end }}
