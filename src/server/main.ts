#!/usr/bin/env node
/**
 * `npm start`: the ready-made agent server (see `Serve.ts` for its settings).
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import * as Serve from "./Serve.ts"

NodeRuntime.runMain(Serve.serve, { teardown: Serve.teardown })
