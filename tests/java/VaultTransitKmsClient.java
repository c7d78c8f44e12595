package pqseal.test;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Base64;
import java.util.Map;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.KeyToolkit;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * Test KMS for Spark: Vault / OpenBao transit, wrapped keys in the shape of parquet-java's sample
 * VaultClient (transit ciphertext of base64(key); kmsInstanceID = the transit mount), on
 * java.net.http instead of okhttp, which PySpark does not ship.
 */
public class VaultTransitKmsClient implements KmsClient {
  private static final ObjectMapper JSON = new ObjectMapper();
  // transit key names; a master key id with '/' (it comes from the file) could reach other API paths
  private static final Pattern KEY_NAME = Pattern.compile("\\w(?:[\\w.-]*\\w)?");
  private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
  private String base;
  private String token;

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL, String accessToken) {
    if (KmsClient.KMS_INSTANCE_URL_DEFAULT.equals(kmsInstanceURL)) {
      throw new ParquetCryptoRuntimeException("Vault URL not set (parquet.encryption.kms.instance.url)");
    }
    String mount = KmsClient.KMS_INSTANCE_ID_DEFAULT.equals(kmsInstanceID) ? "transit" : kmsInstanceID;
    base = kmsInstanceURL.replaceAll("/+$", "") + "/v1/" + mount.replaceAll("^/+|/+$", "") + "/";
    token = KmsClient.KEY_ACCESS_TOKEN_DEFAULT.equals(accessToken)
        ? conf.getTrimmed(KeyToolkit.KEY_ACCESS_TOKEN_PROPERTY_NAME) : accessToken;
    if (token == null || token.isEmpty() || KmsClient.KEY_ACCESS_TOKEN_DEFAULT.equals(token)) {
      throw new ParquetCryptoRuntimeException("no Vault token (parquet.encryption.key.access.token)");
    }
  }

  private String call(String op, String keyName, String field, String value, String answer)
      throws KeyAccessDeniedException {
    if (!KEY_NAME.matcher(keyName).matches()) {
      throw new KeyAccessDeniedException("not a transit key name: " + keyName);
    }
    try {
      String body = JSON.writeValueAsString(Map.of(field, value));
      HttpRequest req = HttpRequest.newBuilder(URI.create(base + op + "/" + keyName))
          .timeout(Duration.ofSeconds(30))
          .header("X-Vault-Token", token)
          .header("Content-Type", "application/json")
          .POST(HttpRequest.BodyPublishers.ofString(body))
          .build();
      HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString());
      if (resp.statusCode() == 401 || resp.statusCode() == 403) {
        throw new KeyAccessDeniedException("Vault " + op + " with " + keyName + ": permission denied");
      }
      if (resp.statusCode() / 100 != 2) {
        throw new ParquetCryptoRuntimeException("Vault " + op + " with " + keyName + ": HTTP " + resp.statusCode());
      }
      JsonNode out = JSON.readTree(resp.body()).path("data").path(answer);
      if (!out.isTextual()) {
        throw new ParquetCryptoRuntimeException("Vault " + op + " with " + keyName + ": no " + answer);
      }
      return out.asText();
    } catch (IOException e) {
      throw new ParquetCryptoRuntimeException("Vault " + op + " with " + keyName + " failed", e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new ParquetCryptoRuntimeException("Vault " + op + " interrupted", e);
    }
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier) throws KeyAccessDeniedException {
    return call("encrypt", masterKeyIdentifier, "plaintext", Base64.getEncoder().encodeToString(keyBytes),
        "ciphertext");
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier) throws KeyAccessDeniedException {
    return Base64.getDecoder().decode(call("decrypt", masterKeyIdentifier, "ciphertext", wrappedKey, "plaintext"));
  }
}
