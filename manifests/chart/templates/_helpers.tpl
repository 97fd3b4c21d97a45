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
