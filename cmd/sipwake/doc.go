// Command sipwake is a SIP edge proxy that keeps mobile softphones reachable while the app
// sleeps: it keeps each device's push token, keeps its registration at the PBX alive, and
// wakes the device with a push (APNs, FCM or a webhook) when a call or a message arrives.
//
// Usage:
//
//	sipwake [-c FILE] [-o table|json] COMMAND
//
// Commands:
//
//	serve           run the daemon in the foreground, JSON logs on stdout
//	validate        load and check the configuration; print "key.path: reason" per problem
//	version         print version, commit, Go version and SIP library version
//	config default  print the complete default configuration as commented YAML
//	config show     print the effective configuration (file, environment and defaults merged)
//
// The configuration is YAML, read from -c/--config or $SIPWAKE_CONFIG; with neither, the
// built-in defaults apply. Every key can be overridden by an environment variable named
// SIPWAKE_ + the key path in upper case with "_" for "." (SIPWAKE_STORE_DRIVER=redis); lists
// are comma separated there. An unknown key is an error.
//
// Exit status: 0 on success, 1 on a usage or configuration error, 2 when a needed service
// cannot be reached.
//
// This package is the composition root: the only one that imports viper, cobra and
// os/signal, and the one that builds the root logger, the metrics registry and the ops
// HTTP listener (/livez, /readyz, /metrics).
package main
