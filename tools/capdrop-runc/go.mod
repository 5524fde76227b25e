// Module capdrop-runc builds the OCI runtime wrapper kindlab registers with
// dockerd on hosts whose capability bounding set lacks capabilities that
// `docker run --privileged` asks for. Standard library only.
module kindlab/tools/capdrop-runc

go 1.24.0
