import { z } from "zod";
import { decimalSchema, isPositiveDecimal } from "./decimal.ts";
import { defineChoice, defineTemplate, partySchema, type TypedContract } from "./template-registry.ts";

/**
 * The reference template (docs/design.md §2): an I-owe-you from issuer to owner. The issuer is the only
 * signatory, so creating an Iou needs the issuer and transferring it needs the owner (the
 * controller) whose authority, with the issuer's as signatory, covers the new Iou.
 */
const iouArguments = z.strictObject({
  issuer: partySchema,
  owner: partySchema,
  amount: decimalSchema.refine(isPositiveDecimal, "the amount must be positive"),
  currency: z.string().regex(/^[A-Z]{3}$/, "a currency code of three upper-case letters"),
});

export type IouArguments = z.output<typeof iouArguments>;
type Iou = TypedContract<IouArguments>;

const transferArgument = z.strictObject({ newOwner: partySchema });

// Daml's Archive takes the empty record; an absent argument means the same.
const archiveArgument = z.preprocess((v) => v ?? {}, z.strictObject({}));

export const IOU_TEMPLATE = "Iou";

export const iouTemplate = defineTemplate({
  name: IOU_TEMPLATE,
  arguments: iouArguments,
  signatories: (args) => [args.issuer],
  observers: (args) => [args.owner],
  choices: {
    Transfer: defineChoice({
      name: "Transfer",
      consuming: true,
      argument: transferArgument,
      controllers: (_arg, iou: Iou) => [iou.arguments.owner],
      body: (arg, iou: Iou) => [
        { kind: "create", template: IOU_TEMPLATE, arguments: { ...iou.arguments, owner: arg.newOwner } },
      ],
    }),
    Archive: defineChoice({
      name: "Archive",
      consuming: true,
      argument: archiveArgument,
      controllers: (_arg, iou: Iou) => iou.signatories,
      body: () => [],
    }),
  },
});
