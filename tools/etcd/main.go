// Command etcd is etcd's own entry point, built from the published
// go.etcd.io/etcd/server/v3 module. That module's go.mod replaces its sibling
// modules with local paths, so `go install` of it fails; this wrapper module
// requires the published siblings instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
