#!/usr/bin/env node
import { agentMain } from './cli.js';

process.exitCode = await agentMain(process.argv.slice(2));
