// Command sluice-peer-benthos runs a Benthos (redpanda-data/benthos v4) stream config with
// only the pure and io components: the peer of `sluice run` reading stdin, used by
// bench/peers/run. Usage: sluice-peer-benthos -c config.yaml
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
