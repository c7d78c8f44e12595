package pqseal.test;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.keytools.KeyToolkit;
import org.apache.parquet.crypto.keytools.KmsClient;

/** Test KMS for Spark: master keys from parquet.encryption.key.list, wrapping as InMemoryKMS. */
public class KeyListKmsClient implements KmsClient {
  private final Map<String, byte[]> keys = new HashMap<>();

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL, String accessToken) {
    for (String entry : conf.getTrimmedStrings("parquet.encryption.key.list")) {
      String[] parts = entry.split(":", 2);
      keys.put(parts[0].trim(), Base64.getDecoder().decode(parts[1].trim()));
    }
  }

  private byte[] key(String id) throws KeyAccessDeniedException {
    byte[] k = keys.get(id);
    if (k == null) throw new KeyAccessDeniedException("unknown master key " + id);
    return k;
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier) throws KeyAccessDeniedException {
    return KeyToolkit.encryptKeyLocally(keyBytes, key(masterKeyIdentifier),
        masterKeyIdentifier.getBytes(StandardCharsets.UTF_8));
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier) throws KeyAccessDeniedException {
    return KeyToolkit.decryptKeyLocally(wrappedKey, key(masterKeyIdentifier),
        masterKeyIdentifier.getBytes(StandardCharsets.UTF_8));
  }
}
