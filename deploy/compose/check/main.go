// compose-check loads a Compose file with compose-go, the loader of Docker Compose: the
// file is validated against the Compose Specification's schema (unknown keys are errors),
// its anchors, merges and variables resolved, and its dependencies checked (a service
// that depends on one not defined fails). It prints the resolved project as JSON, which
// deploy/compose/tests reads.
//
// Usage: compose-check FILE
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions([]string{os.Args[1]}, cli.WithOsEnv, cli.WithResolvedPaths(false))
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-check:", err)
	os.Exit(1)
}
