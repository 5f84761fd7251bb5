// Package relay is not built yet.
package relay
