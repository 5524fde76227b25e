// Command kubectl is the Kubernetes CLI, built from the published
// k8s.io/kubectl library at the version pinned in go.mod.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Registers the client-go auth plugins (OIDC and friends) that
	// kubeconfigs may name.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	// RunNoErrOutput leaves the error to CheckErr, which prints it the way
	// kubectl users expect ("error: ...") and picks the exit code.
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
