{{/* Names and labels. With the release name "sgmesh" they are those of the kustomize base. */}}

{{- define "sgmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sgmesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "sgmesh.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sgmesh.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A Service name is a DNS label: 63 characters at most, suffix included. */}}
{{- define "sgmesh.metricsService" -}}
{{- printf "%s-metrics" (include "sgmesh.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "sgmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sgmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of an object; call with (list . "component"). */}}
{{- define "sgmesh.labels" -}}
{{- $root := index . 0 -}}
{{ include "sgmesh.selectorLabels" $root }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/part-of: sgmesh
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sgmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
