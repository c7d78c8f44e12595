package pqseal.bench;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Base64;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * parquet-java KmsClient for benchmarks/kms_server.py: wraps and unwraps over HTTP at
 * parquet.encryption.kms.instance.url, naming itself "parquet-java pid=N" so the server
 * counts the calls per JVM. JDK only (java.net.http).
 */
public class HttpKmsClient implements KmsClient {
  private static final Pattern FIELD = Pattern.compile("\"(wrapped|key|error)\"\\s*:\\s*\"([^\"]*)\"");
  private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
  private final String client = "parquet-java pid=" + ProcessHandle.current().pid();
  private String url;

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL, String accessToken) {
    if (kmsInstanceURL == null || kmsInstanceURL.equals(KmsClient.KMS_INSTANCE_URL_DEFAULT)) {
      throw new ParquetCryptoRuntimeException("set parquet.encryption.kms.instance.url to the KMS server");
    }
    url = kmsInstanceURL.endsWith("/") ? kmsInstanceURL.substring(0, kmsInstanceURL.length() - 1) : kmsInstanceURL;
  }

  private static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }

  private String call(String path, String masterKeyIdentifier, String field, String value, String want)
      throws KeyAccessDeniedException {
    String body = "{\"master_key_id\": " + quote(masterKeyIdentifier) + ", " + quote(field) + ": " + quote(value) + "}";
    HttpRequest req = HttpRequest.newBuilder(URI.create(url + path))
        .timeout(Duration.ofSeconds(30))
        .header("Content-Type", "application/json")
        .header("X-Kms-Client", client)
        .POST(HttpRequest.BodyPublishers.ofString(body))
        .build();
    HttpResponse<String> resp;
    try {
      resp = http.send(req, HttpResponse.BodyHandlers.ofString());
    } catch (IOException e) {
      throw new ParquetCryptoRuntimeException("KMS " + path + " failed: " + e.getMessage(), e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new ParquetCryptoRuntimeException("KMS " + path + " interrupted", e);
    }
    Matcher m = FIELD.matcher(resp.body());
    String got = null;
    String error = "HTTP " + resp.statusCode();
    while (m.find()) {
      if (m.group(1).equals(want)) got = m.group(2);
      if (m.group(1).equals("error")) error = m.group(2);
    }
    if (resp.statusCode() == 404 || resp.statusCode() == 403) {
      throw new KeyAccessDeniedException("KMS " + path + ": " + error);
    }
    if (resp.statusCode() != 200 || got == null) {
      throw new ParquetCryptoRuntimeException("KMS " + path + ": " + error);
    }
    return got;
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier) throws KeyAccessDeniedException {
    return call("/wrap", masterKeyIdentifier, "key", Base64.getEncoder().encodeToString(keyBytes), "wrapped");
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier) throws KeyAccessDeniedException {
    return Base64.getDecoder().decode(call("/unwrap", masterKeyIdentifier, "wrapped", wrappedKey, "key"));
  }
}
