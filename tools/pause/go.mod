// Module pause builds the pod sandbox program of kindlab's kind node image.
module kindlab/tools/pause

go 1.24.0
