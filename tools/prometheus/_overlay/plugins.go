// Package plugins, as kindlab builds Prometheus: only the Kubernetes service
// discovery (prometheus-operator's scrape configs use nothing else; file and
// HTTP discovery stay, registered by the package's minimum.go). Prometheus
// generates this file from plugins.yml; kindlab swaps it in with `go build
// -overlay`, which leaves out the cloud providers' SDKs: a fraction of the build.
package plugins

import (
	_ "github.com/prometheus/prometheus/discovery/kubernetes" // Register kubernetes plugin.
)
