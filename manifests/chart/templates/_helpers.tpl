{{/*
weft.namespace is the namespace of every namespaced object: the release's,
which must be weft-system. weftctl and the components' defaults look for Weft
there (api/mesh.SystemNamespace); an install elsewhere would half work.
Helm keeps its release record in that namespace before it creates any object,
so the chart does not create it: helm install -n weft-system --create-namespace.
*/}}
{{- define "weft.namespace" -}}
{{- if ne .Release.Namespace "weft-system" -}}
{{- fail (printf "weft installs into namespace weft-system, not %q: helm install %s manifests/chart -n weft-system --create-namespace" .Release.Namespace .Release.Name) -}}
{{- end -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/* weft.image is the image of component (weft-controller, weft-agent). */}}
{{- define "weft.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .component (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/*
weft.podAnnotations are the annotations of the controller's and the agents'
pods: with metrics on, the prometheus.io/scrape, port and path annotations
the usual Prometheus pod discovery reads; then podAnnotations, which win (set
prometheus.io/scrape: "false" there to keep a Prometheus away).
*/}}
{{- define "weft.podAnnotations" -}}
{{- $a := dict -}}
{{- if .Values.metrics.enabled -}}
{{- $_ := set $a "prometheus.io/scrape" "true" -}}
{{- $_ := set $a "prometheus.io/port" (toString .Values.metrics.port) -}}
{{- $_ := set $a "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- $a = merge (dict) .Values.podAnnotations $a -}}
{{- with $a -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* weft.metricsAddr is the components' --metrics-addr: empty turns them off. */}}
{{- define "weft.metricsAddr" -}}
{{- if .Values.metrics.enabled -}}
{{- printf ":%d" (int .Values.metrics.port) -}}
{{- end -}}
{{- end -}}
