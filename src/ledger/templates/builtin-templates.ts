import { iouTemplate } from "./iou.ts";
import { TemplateRegistry } from "./template-registry.ts";

/** The templates every Lockstep participant knows. All participants must use the same set. */
export const builtinTemplates = new TemplateRegistry([iouTemplate]);
