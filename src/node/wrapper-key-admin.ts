import type { MessageInitShape } from "@bufbuild/protobuf";
import { LockstepError } from "../common/errors.ts";
import type {
  RetireWrapperKeyResponseSchema,
  RewrapPrivateKeysResponseSchema,
  WrapperKeyInfoSchema,
} from "../gen/lockstep/admin/v1/keys_pb.ts";
import type { KeyAdminDeps } from "./key-admin.ts";

// PLACEHOLDER: being built (wrapper key rotation); replaced before issue 11 is resolved.

export async function wrapperKeyInfos(
  _deps: KeyAdminDeps,
): Promise<MessageInitShape<typeof WrapperKeyInfoSchema>[]> {
  return [];
}

export async function rewrapPrivateKeys(
  _deps: KeyAdminDeps,
  _path: string,
): Promise<MessageInitShape<typeof RewrapPrivateKeysResponseSchema>> {
  throw new LockstepError("INTERNAL_ERROR", { details: "RewrapPrivateKeys is not built yet" });
}

export async function retireWrapperKey(
  _deps: KeyAdminDeps,
  _fingerprint: string,
  _force: boolean,
): Promise<MessageInitShape<typeof RetireWrapperKeyResponseSchema>> {
  throw new LockstepError("INTERNAL_ERROR", { details: "RetireWrapperKey is not built yet" });
}
